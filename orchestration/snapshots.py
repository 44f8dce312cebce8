"""Trained students kept in the run folder for later phases: born-again teachers, the next
task of a continual run (`<run_dir>/snapshots/<phase>.safetensors`), and the memory targets
of continual replay with stored targets (`<run folder>/replay/<phase>`, an offline store
written straight to the run folder's location, object storage included, so that every train
worker reads it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cluster import drop_other_attempts, join, new_attempt, ray_options, write_parquet
from teachers import TeacherConfig, is_complete

MEMORY_CHUNK = 256  # samples per forward when a snapshot labels its task's memory


class SnapshotFolder:
    """`run_dir`: the run's local folder (the driver's working copy of a run on object
    storage); `replay_root`: where the replay stores go (a folder or URI every node reads)."""

    def __init__(self, run_dir: str | Path, replay_root: str):
        self.snapshots = Path(run_dir) / "snapshots"
        self.replay = replay_root

    def save(self, phase: str, weights: dict[str, Any]) -> Path:
        """Keep the trained student of `phase` (atomically: a resumed run never serves a half-written one)."""
        from safetensors.torch import save_file

        self.snapshots.mkdir(parents=True, exist_ok=True)
        path = self.snapshots / f"{phase}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(weights, str(tmp))
        tmp.replace(path)
        return path

    def path(self, phase: str) -> Path:
        path = self.snapshots / f"{phase}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no snapshot of phase {phase!r} at {path}: the phase that exports it must "
                                    f"finish first in this run folder (born-again teacher_snapshot, or the "
                                    f"previous task of a continual run)")
        return path

    def weights(self, phase: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.path(phase)))

    def memory(self, phase: str) -> str:
        """The folder of `phase`'s stored memory targets (it must exist)."""
        folder = join(self.replay, phase)
        if not is_complete(folder):
            raise FileNotFoundError(f"no stored memory targets of phase {phase!r} at {folder}: that task must "
                                    f"finish first in this run folder (continual.replay_targets: stored)")
        return folder

    def store_memory(self, phase: str, rows: np.ndarray, x: np.ndarray, config: Any, dataset: Any,
                     weights: str) -> bool:
        """Label the memory samples `x` (training rows `rows`) with the snapshot of `phase` (its
        weights at `weights`, where every node reads them) into its replay store, with the whole
        distribution of every sample; False when it was already there. The labelling runs as a
        Ray task on the snapshot teachers' resources (`student.serve_resources`: their GPU and
        node group), not in the orchestrator's process."""
        import ray

        from models import file_version
        from orchestration.precompute import store_key
        from orchestration.teacher_training import teacher_app_args
        from teachers import write_manifest

        folder = join(self.replay, phase)
        if is_complete(folder):
            return False
        res = config.student.serve_resources
        cfg = TeacherConfig(name=f"memory-{phase}"[:48], model=config.student.model, weights=weights, resources=res)
        args = teacher_app_args(cfg, weights, dataset, config.distill, config.run.allowed_factory_modules)
        attempt = new_attempt()
        task = ray.remote(label_memory).options(**ray_options(res.num_cpus, res.num_gpus, res.custom, res.labels))
        ray.get(task.remote(args, x, rows, dataset.num_classes, join(folder, attempt, "part-00000.parquet")))
        key = replace(store_key(config, dataset, cfg.name, file_version(self.path(phase))), top_k=dataset.num_classes,
                      kind="topk")
        write_manifest(folder, key, None, shards=attempt)
        drop_other_attempts(folder, kept=attempt)
        return True


def label_memory(args: Any, x: np.ndarray, rows: np.ndarray, num_classes: int, location: str,
                 chunk: int = MEMORY_CHUNK) -> None:
    """The replay store's shard at `location`: the teacher of `args` (on the device its
    resources give it) labels `x` `chunk` samples per forward, every class kept."""
    import pyarrow as pa

    from cluster import work_device
    from ingest import Batch
    from teachers import LoadedTeacher, to_table

    teacher = LoadedTeacher.load(args, work_device(args.resources.num_gpus, f"replay labelling by {args.name!r}"))
    tables = [to_table(teacher.records([Batch.of_inputs("", x[i:i + chunk])], top_k=num_classes,
                                       dense_max_classes=1)[0], sample=rows[i:i + chunk])
              for i in range(0, len(x), chunk)]
    write_parquet(pa.concat_tables(tables), location)
