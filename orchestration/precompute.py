"""`distillery precompute CONFIG`: write every teacher's top-k soft targets to the offline store,
and find those stores again for a run with `distill.mode: offline`.

Teachers run over the students' split (held in memory, or streamed from the source's files)
with Ray Data (`map_batches` on an actor pool), keyed by each row's id; shards are
written as Parquet with the Arrow codec into an attempt's own subfolder of the store, which
becomes the store only when the manifest naming its shards is written, so an interrupted
precompute is never mistaken for a finished one. Nothing is renamed: the store root
(`distill.store_dir`) may be a local folder or a URI on object storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
from rich.console import Console

from cluster import (ResourcesConfig, drop_other_attempts, exists, fetch_file, filesystem_for, is_uri, join,
                     new_attempt, ray_options, work_device)
from ingest import Batch, BatchId, Dataset
from orchestration.config import RunConfig
from orchestration.progress import progress_blocks
from teachers import Manifest, StoreKey, TeacherConfig, find_store, is_complete, write_manifest

INPUTS = "inputs"
ROW_ID = "row_id"


class StoreScorer:
    """Ray Data callable: one teacher's top-k (or sampled) records for a batch of (sample, inputs) rows."""

    def __init__(self, args: Any, top_k: int, target_kind: str = "topk"):
        import torch

        from teachers import LoadedTeacher

        torch.set_num_threads(1)
        device = work_device(args.resources.num_gpus, f"precompute of teacher {args.name!r}")
        self.teacher = LoadedTeacher.load(args, device)
        self.top_k, self.target_kind = top_k, target_kind

    def __call__(self, batch: pa.Table) -> pa.Table:
        from teachers import to_table

        column = batch.column(INPUTS).combine_chunks()
        x = column.flatten().to_numpy().reshape(len(column), -1)
        sample = batch.column("sample").to_numpy()
        row_ids = batch.column(ROW_ID).to_numpy(zero_copy_only=False)
        # dense_max_classes=1: the store always holds top-k (or sampled), whatever the output space;
        # the first row's id seeds the batch's draws
        batch_id = BatchId.parse(str(row_ids[0]) if len(row_ids) else "")  # seeds a block's draws
        record = self.teacher.records([Batch.of_inputs(batch_id, x)], top_k=self.top_k, dense_max_classes=1,
                                      target_kind=self.target_kind)[0]
        if self.teacher.output_space.startswith("tokens:"):  # one row per target token, by sample and position
            import torch

            per_sequence = self.teacher.module.targets_per_sequence(torch.tensor(x)).numpy()
            sample, row_ids = np.repeat(sample, per_sequence), np.repeat(row_ids, per_sequence)
        return to_table(record, sample=sample, row_ids=row_ids)


def stream_rows(batch: dict[str, np.ndarray]) -> pa.Table:
    """A block of the students' stream (`orchestration.stream_data`, as numpy) as the rows a
    scorer reads: the teachers' inputs, the row id, and a 64-bit number of the id as its sample."""
    from ingest import row_keys
    from teachers import fixed_size_list

    ids = np.asarray(batch["id"]).astype(str)
    inputs = np.asarray(batch["teacher_x"] if "teacher_x" in batch else batch["x"])
    inputs = inputs.reshape(len(ids), -1)
    return pa.table({"sample": pa.array(row_keys(ids)), ROW_ID: pa.array(ids, pa.string()),
                     INPUTS: fixed_size_list(inputs, pa.int64() if inputs.dtype.kind in "iu" else pa.float32())})


def store_key(cfg: RunConfig, dataset: Dataset, teacher: str, version: str, dtype: str = "float32") -> StoreKey:
    return StoreKey(dataset=dataset.fingerprint, teacher=teacher, teacher_version=version,
                    top_k=min(cfg.distill.top_k, dataset.num_classes), temperature=float(cfg.distill.temperature),
                    kind=cfg.distill.target_kind, dtype=dtype)


def store_root(cfg: RunConfig) -> str:
    """`distill.store_dir`: a URI as it is, a local folder made absolute."""
    return cfg.distill.store_dir if is_uri(cfg.distill.store_dir) else str(Path(cfg.distill.store_dir).resolve())


def _weights(cfg: RunConfig, teacher: TeacherConfig, dataset: Dataset, train: bool,
             cache_dir: str) -> tuple[Optional[str], Optional[float]]:
    """The teacher's weights file and, when it was trained here, its test score: given in the
    config (no score), cached in `cache_dir` (the driver's: a Ray worker may not share its
    environment), or (with `train`) trained now."""
    from orchestration.teacher_training import cached_teacher, train_or_load_teacher
    from teachers import resolve_model

    if teacher.weights:
        return teacher.weights, None
    if teacher.pretrained:  # the factory loads its own weights: scored as it is, never fine-tuned
        return None, None
    model = resolve_model(teacher.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=cfg.run.allowed_factory_modules)
    if train:
        trained = train_or_load_teacher(teacher.name, model, teacher.training, cfg.data, dataset, cache_dir,
                                        teacher.resources.num_gpus)
    else:
        trained = cached_teacher(teacher.name, model, teacher.training, cfg.data, dataset, cache_dir)
    return (trained.weights_path, trained.test_score) if trained else (None, None)


def _test_score(args: Any, dataset: Dataset) -> float:
    """The teacher's test metric for the store's manifest, where the teacher runs (its GPU)."""
    from orchestration.teacher_training import test_score
    from teachers import LoadedTeacher

    device = work_device(args.resources.num_gpus, f"test scoring of teacher {args.name!r}")
    return test_score(LoadedTeacher.load(args, device).module, dataset, device)


def scorers(res: ResourcesConfig) -> int:
    """Scoring actors: as many as the teacher has replicas (each with one replica's resources:
    one per accelerator with `num_gpus: 1`, or per CPU slot)."""
    return res.autoscaling.max_replicas if res.autoscaling is not None else res.replicas


def pretrained_version(cfg: RunConfig, teacher: TeacherConfig, dataset: Dataset) -> str:
    """A pretrained teacher's version from its checkpoint's metadata, read on the driver (no weights)."""
    from teachers import declared_version, resolve_model

    model = resolve_model(teacher.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=cfg.run.allowed_factory_modules)
    return declared_version(model)


def scorer_options(res: ResourcesConfig) -> dict[str, Any]:
    """Ray Data options of the scoring actor: the teacher's resources and node group."""
    options = ray_options(res.num_cpus or 0.25, res.num_gpus, res.custom, res.labels)
    options["num_gpus"] = options["num_gpus"] or None  # Ray Data: None, not 0, for a CPU actor
    return options


def precompute(cfg: RunConfig, dataset: Dataset, console: Console) -> dict[str, Manifest]:
    """Write (or reuse) the store of every teacher in `cfg`; return their manifests by teacher."""
    import ray

    from cluster import teacher_cache_dir
    from models import file_version
    from orchestration.teacher_training import teacher_app_args, training_options

    root = store_root(cfg)
    cache_dir = teacher_cache_dir()
    out = {}
    for teacher in cfg.teachers:
        weights, score = ray.get(ray.remote(_weights).options(**training_options(teacher)).remote(
            cfg, teacher, dataset, True, cache_dir))
        version = file_version(fetch_file(weights)) if weights else pretrained_version(cfg, teacher, dataset)
        key = store_key(cfg, dataset, teacher.name, version, teacher.dtype)
        folder = key.folder(root)
        if is_complete(folder):
            out[teacher.name] = find_store(root, key)
            console.print(f"teacher {teacher.name}: store {folder} is current, reused")
            continue
        args = teacher_app_args(teacher, weights, dataset, cfg.distill, cfg.run.allowed_factory_modules)
        attempt = new_attempt()
        filesystem, shards = filesystem_for(join(folder, attempt))
        samples = dataset.streamed.rows if dataset.streamed else len(dataset.train.y)
        console.print(f"teacher {teacher.name}: scoring {samples} samples with Ray Data -> {folder}")
        (_scored_rows(cfg, dataset)
         .map_batches(StoreScorer, fn_constructor_kwargs={"args": args, "top_k": key.top_k, "target_kind": key.kind},
                      batch_size=512, batch_format="pyarrow", concurrency=scorers(teacher.resources),
                      **scorer_options(teacher.resources))
         .write_parquet(shards, filesystem=filesystem))
        if score is None:  # weights the config gives: scored where the teacher runs (loaded once more)
            score = ray.get(ray.remote(_test_score).options(**training_options(teacher)).remote(args, dataset))
        out[teacher.name] = write_manifest(folder, key, score, shards=attempt)
        drop_other_attempts(folder, kept=attempt)  # what interrupted earlier attempts left
        console.print(f"teacher {teacher.name}: {out[teacher.name].rows} rows of top-{key.top_k} soft targets "
                      f"(T={key.temperature:g}, version {key.teacher_version})")
    return out


def _scored_rows(cfg: RunConfig, dataset: Dataset) -> Any:
    """The rows to score as a Ray Data dataset: the split held in memory, or the students'
    stream read from the source's files."""
    import ray.data

    from teachers import fixed_size_list

    if dataset.streamed is None:
        x = dataset.train.x.reshape(len(dataset.train.x), -1)
        rows = pa.table({"sample": np.arange(len(x), dtype=np.int64), ROW_ID: pa.array(dataset.train.ids, pa.string()),
                         INPUTS: fixed_size_list(x, pa.int64() if x.dtype.kind in "iu" else pa.float32())})  # packed tokens
        return ray.data.from_arrow(progress_blocks(rows, 512))
    from orchestration.stream_data import students_dataset

    return students_dataset(cfg.data).map_batches(stream_rows, batch_size=None, batch_format="numpy",
                                                         num_cpus=cfg.data.source.read_cpus)


def offline_stores(cfg: RunConfig, dataset: Dataset) -> dict[str, tuple[str, Manifest]]:
    """The store folder and manifest of every teacher, for a run with `distill.mode: offline`.

    Raises `SoftTargetStoreError` when a teacher was never trained/precomputed or its store is stale.
    """
    from cluster import teacher_cache_dir
    from models import file_version
    from teachers import SoftTargetStoreError

    root = store_root(cfg)
    cache_dir = teacher_cache_dir()
    out = {}
    for teacher in cfg.teachers:
        weights, _ = _weights(cfg, teacher, dataset, train=False, cache_dir=cache_dir)
        if teacher.pretrained and weights is None:
            version = pretrained_version(cfg, teacher, dataset)
        elif weights is None or not exists(weights):
            raise SoftTargetStoreError(f"teacher {teacher.name!r} has no weights yet, so it has no store: run "
                                       f"`distillery precompute` with this config first")
        else:
            version = file_version(fetch_file(weights))
        key = store_key(cfg, dataset, teacher.name, version, teacher.dtype)
        out[teacher.name] = (key.folder(root), find_store(root, key))
    return out
