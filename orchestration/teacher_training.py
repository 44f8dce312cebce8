"""Train a teacher on the dataset (plain torch) and cache its weights by content key."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_model

from cluster import exists, is_uri, join, put_file, ray_options, read_text, work_device
from ingest import DataConfig, Dataset, Split
from students import DistillConfig, accuracy as logits_accuracy
from teachers import (ResolvedModel, TeacherAppArgs, TeacherConfig, TeacherTrainingConfig, load_teacher, model_input,
                      resolve_model)
from models import count_parameters


@dataclass
class TrainedTeacher:
    weights_path: Optional[str]  # None for pretrained teachers
    test_score: float  # test accuracy; held-out perplexity for language models
    parameters: int
    train_seconds: float
    cached: bool


def cache_key(model: ResolvedModel, training: TeacherTrainingConfig, data: DataConfig, dataset: Dataset) -> str:
    """The key of a trained teacher: its model, its training and what it trains on. A source's
    part is the content of the teachers' train and test splits (what the files hold, not how
    the students read them: a transfer split, streaming or a reordered file keep the key)."""
    if data.source is None:  # a bundled dataset's key is what it was before data.source existed (cached teachers stay)
        data_part = data.model_dump(exclude={"student_train_samples", "generated", "source"})
    else:
        space = dataset.output_space
        data_part = {"teachers_train": dataset.teachers_fingerprint, "test": dataset.test.fingerprint(space)}
    blob = json.dumps({"factory": model.factory, "kwargs": model.kwargs, "training": training.model_dump(),
                       "data": data_part, "format": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def accuracy(module: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: str = "cpu", chunk: int = 4096) -> float:
    """Test accuracy of a classifier, its forward on `device` in chunks of rows."""
    module.eval()
    dtype = next(module.parameters()).dtype  # a bf16 teacher takes bf16 features
    with torch.no_grad():
        logits = [module(model_input(torch.tensor(x[i:i + chunk]), device, dtype)).float().cpu()  # x may be read-only
                  for i in range(0, len(x), chunk)]
    return logits_accuracy(torch.cat(logits).numpy(), y)


def perplexity(module: torch.nn.Module, split: Split, chunk: int = 64, device: str = "cpu") -> float:
    """Held-out perplexity of a causal LM over the split's target tokens (forwards on `device`,
    `chunk` sequences at a time; the head in chunks of rows: `CausalLM.summed_nll`)."""
    module.eval()
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(split.y), chunk):
            part, count = module.summed_nll(torch.tensor(split.x[start:start + chunk], device=device))
            nll, tokens = nll + float(part), tokens + count
    return float(np.exp(nll / max(tokens, 1)))


def test_score(module: torch.nn.Module, dataset: Dataset, device: str = "cpu") -> float:
    """The teacher's headline test metric: accuracy, or perplexity for language models; the
    module runs on `device` (where it already is)."""
    if dataset.kind == "lm":
        return perplexity(module, dataset.test, device=device)
    return accuracy(module, dataset.test.x, dataset.test.y, device)


def _fit(module: torch.nn.Module, dataset: Dataset, cfg: TeacherTrainingConfig, name: str = "",
         device: str = "cpu") -> None:
    """AdamW with a cosine schedule over the epochs, on `device` (the module is there); for
    language models the labels are the next tokens of the completions (`Split.labels`)."""
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    train = dataset.teachers_train
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        module.train()
        start, losses = time.perf_counter(), []
        for idx in torch.randperm(len(train.y), generator=gen).split(cfg.batch_size):
            idx = idx.numpy()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(torch.from_numpy(train.x[idx]).to(device)),
                                   torch.from_numpy(train.labels(idx)).to(device))
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        if dataset.kind == "lm":  # minutes per epoch: say how it goes (the driver shows the task's output)
            print(f"teacher {name}: epoch {epoch + 1}/{cfg.epochs}, train loss "
                  f"{np.mean(losses):.3f}, {time.perf_counter() - start:.0f}s", flush=True)


def _cached_files(name: str, model: ResolvedModel, training: TeacherTrainingConfig, data: DataConfig,
                  dataset: Dataset, cache_dir: str | Path) -> tuple[str, str]:
    """Where the weights and their info are cached: under `cache_dir`, a folder or a URI
    (`cluster.teacher_cache_dir`)."""
    stem = f"{name}-{cache_key(model, training, data, dataset)}"
    return join(str(cache_dir), f"{stem}.safetensors"), join(str(cache_dir), f"{stem}.json")


def cached_teacher(name: str, model: ResolvedModel, training: TeacherTrainingConfig, data: DataConfig,
                   dataset: Dataset, cache_dir: str | Path) -> TrainedTeacher | None:
    """The cached weights for this exact (model, training, data), or None if never trained."""
    weights, info_path = _cached_files(name, model, training, data, dataset, cache_dir)
    if not (exists(weights) and exists(info_path)):
        return None
    info = json.loads(read_text(info_path))
    score = info.get("test_score", info.get("test_accuracy"))  # caches written before language models
    return TrainedTeacher(str(weights), score, info["parameters"], info["train_seconds"], True)


def train_or_load_teacher(name: str, model: ResolvedModel, training: TeacherTrainingConfig,
                          data: DataConfig, dataset: Dataset, cache_dir: str | Path,
                          num_gpus: float = 0.0) -> TrainedTeacher:
    """Return the cached weights for this exact (model, training, data) or train and cache them
    (on a GPU when the teacher's resources give it `num_gpus`; the weights do not depend on it
    beyond floating-point rounding, so the cache key does not either)."""
    cached = cached_teacher(name, model, training, data, dataset, cache_dir)
    if cached is not None:
        return cached
    weights, info_path = _cached_files(name, model, training, data, dataset, cache_dir)
    torch.manual_seed(training.seed)
    device = work_device(num_gpus, f"training of teacher {name!r}")
    module = model.build().to(device)
    start = time.perf_counter()
    _fit(module, dataset, training, name, device)
    seconds = time.perf_counter() - start
    module = module.cpu()
    with tempfile.TemporaryDirectory(prefix="distillery-teacher-") as tmp:
        local = Path(tmp) / "weights.safetensors"
        save_model(module, str(local))  # tied weights (a language model's embedding and head) are stored once
        result = TrainedTeacher(weights, test_score(load_teacher(model, local).to(device), dataset, device),
                                count_parameters(module), seconds, False)
        put_file(local, weights)  # atomic on a folder: a half-written file is never picked up as cached
        (Path(tmp) / "info.json").write_text(json.dumps({k: v for k, v in asdict(result).items() if k != "cached"}))
        put_file(Path(tmp) / "info.json", info_path)  # written last: it marks the weights complete
    return result


def teacher_app_args(cfg: TeacherConfig, weights_path: Optional[str], dataset: Dataset, distill: DistillConfig,
                     allowed_modules: list[str], *, features: list[str] | None = None,
                     live_run: str | None = None, audit_dir: str | None = None) -> TeacherAppArgs:
    """Everything a process needs to load teacher `cfg` and answer with the run's soft targets:
    `features` are the submodules whose outputs its records carry; `live_run`: the run whose
    peer trainer publishes its weights;
    `audit_dir`: the run's audit folder, where each replica records the batches it answered."""
    model = resolve_model(cfg.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=allowed_modules)
    return TeacherAppArgs(name=cfg.name, factory=model.factory, kwargs=model.kwargs,
                          allowed_modules=list(model.allowed_modules), weights_path=weights_path,
                          in_features=dataset.in_features, temperature=distill.temperature,
                          dense_max_classes=distill.dense_max_classes, top_k=distill.top_k, dtype=cfg.dtype,
                          resources=cfg.resources, batching=cfg.batching,
                          features=features or [], live_run=live_run, audit_dir=audit_dir)


def training_options(cfg: TeacherConfig) -> dict[str, Any]:
    """Ray options of the task that trains teacher `cfg`: on its node group (custom resources,
    labels) with its GPUs, a quarter of a core beside them."""
    res = cfg.resources
    return ray_options(0.25, res.num_gpus, res.custom, res.labels)


def trained_weights(configs: list[TeacherConfig], resolve: Callable[[TeacherConfig], ResolvedModel], data: DataConfig,
                    dataset: Any, cache_dir: str) -> dict[str, TrainedTeacher]:
    """Each teacher's weights: its file (or none, pretrained), else trained now or loaded from
    the cache, the teachers to train in parallel (one Ray task each, on the teacher's resources
    and node group). A cache hit is taken here, without a task, when every node reads the
    cache (a URI, or a cluster of one node)."""
    import ray

    task = ray.remote(train_or_load_teacher)
    pending = {}
    out = {}
    visible_everywhere = is_uri(str(cache_dir)) or sum(1 for node in ray.nodes() if node["Alive"]) == 1
    for cfg in configs:
        if cfg.weights or cfg.pretrained:
            out[cfg.name] = TrainedTeacher(cfg.weights, float("nan"), 0, 0.0, True)
            continue
        # found here, and every replica reads it: no task (a new worker process) needed
        cached = cached_teacher(cfg.name, resolve(cfg), cfg.training, data, dataset, cache_dir) \
            if visible_everywhere else None
        if cached is not None:
            out[cfg.name] = cached
        else:
            pending[cfg.name] = task.options(**training_options(cfg)).remote(
                cfg.name, resolve(cfg), cfg.training, data, dataset, cache_dir, cfg.resources.num_gpus)
    for name, ref in pending.items():
        out[name] = ray.get(ref)
    return out

