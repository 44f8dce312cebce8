"""Scaling-law points from the runs the system recorded (`<output_dir>/<run>/`: config.json,
state.json, results.json).

A language-model run gives:
- a supervised point per teacher (its parameters, its training tokens = epochs x the training
  split's target tokens, its held-out cross-entropy = log perplexity) and per student trained
  without KD (the baseline phases);
- a distilled point per student of a method that distils one teacher's dense token
  distributions on the real data (`dense: true`, a `kd` term, no quantization, speculative
  or generated data), with that teacher's cross-entropy.

Parameters are counted as the paper counts them, without the embeddings (`non_embedding`,
the default: every `nn.Embedding`, so token and position embeddings and a head tied to the
token embedding), or all of them (`all`: what the run recorded). The non-embedding count is
taken from the model the run's config builds. In tiny models the embeddings are most of the
parameters, so the two counts give very different coefficients.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cluster import DEFAULT_ALLOWED_MODULES, phase_kind
from ingest import DataConfig
from planning.fit import Point
from students import DistillConfig, StudentConfig
from teachers import TeacherConfig


@dataclass
class RunSections:
    """The sections of a run's `config.json` the history reads (each validated by its owner)."""

    data: DataConfig
    student: StudentConfig
    distill: DistillConfig
    teachers: list[TeacherConfig]
    allowed_factory_modules: tuple[str, ...]

    @classmethod
    def read(cls, raw: dict[str, Any]) -> "RunSections":
        return cls(DataConfig(**raw.get("data", {})), StudentConfig(**raw["student"]),
                   DistillConfig(**raw.get("distill", {})), [TeacherConfig(**t) for t in raw.get("teachers", [])],
                   tuple(raw.get("run", {}).get("allowed_factory_modules", DEFAULT_ALLOWED_MODULES)))


@dataclass
class History:
    supervised: list[Point] = field(default_factory=list)
    distilled: list[Point] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # runs or phases left out, and why

    def extend(self, other: "History") -> None:
        """Add another run's points; a teacher shared by several runs (cached) counts once."""
        seen = {(p.phase, p.params, p.tokens, p.loss) for p in self.supervised if p.teacher}
        self.supervised += [p for p in other.supervised if not p.teacher or (p.phase, p.params, p.tokens, p.loss)
                            not in seen]
        self.distilled += other.distilled
        self.skipped += other.skipped


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _distilling_teacher(cfg: RunSections, method: str) -> Optional[str]:
    """The one teacher whose dense distributions `method` learns, or None if it is not a
    plain token-level KD method."""
    m = (cfg.distill.methods or {}).get(method)
    if m is None or not m.dense or m.quantize or m.speculative or m.train_data != "real":
        return None
    if not any(t.name == "kd" for t in m.terms):
        return None
    teachers = m.teachers or [t.name for t in cfg.teachers]
    return teachers[0] if len(teachers) == 1 else None


PARAMETER_COUNTS = ("non_embedding", "all")


@functools.lru_cache(maxsize=64)
def _non_embedding_parameters(model_json: str, data_json: str, allowed: tuple[str, ...]) -> int:
    """Parameters of the model a config builds, less those of its `nn.Embedding` modules."""
    import torch

    from cluster import ModelSpec
    from teachers import resolve_model

    dataset = _dataset(data_json)
    model = resolve_model(ModelSpec.model_validate_json(model_json), in_features=dataset.in_features,
                          num_classes=dataset.num_classes, allowed_modules=allowed).build()
    embedding = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def _counter(cfg: RunSections, count: str):
    """params(recorded, model config) -> the count the fit uses."""
    if count not in PARAMETER_COUNTS:
        raise ValueError(f"parameter count {count!r}: expected one of {PARAMETER_COUNTS}")
    if count == "all":
        return lambda recorded, model: float(recorded)
    data, allowed = cfg.data.model_dump_json(), cfg.allowed_factory_modules
    return lambda recorded, model: float(_non_embedding_parameters(model.model_dump_json(), data, allowed))


@functools.lru_cache(maxsize=2)
def _dataset(data_json: str):
    """The runs' dataset, loaded (and tokenized) once for every count taken from it."""
    from ingest import load_dataset

    return load_dataset(DataConfig.model_validate_json(data_json))


@functools.lru_cache(maxsize=8)
def _token_counts(data_json: str) -> tuple[int, int]:
    """Target tokens of the training split and of the students' subset of it."""
    from ingest import student_subset

    data = DataConfig.model_validate_json(data_json)
    train = _dataset(data_json).train
    return len(train.labels(slice(None))), len(student_subset(train, data.student_train_samples).labels(slice(None)))


def run_history(run_dir: str | Path, count: str = "non_embedding") -> History:
    """The points of one finished (or partly finished) run, with parameters counted as `count`
    says (one of `PARAMETER_COUNTS`)."""
    run_dir = Path(run_dir)
    history = History()
    try:
        cfg = RunSections.read(_read(run_dir / "config.json"))
        phases = _read(run_dir / "state.json")["phases"]
    except FileNotFoundError as exc:
        history.skipped.append(f"{run_dir}: not a run folder ({exc.filename} missing)")
        return history
    if not cfg.data.language_model:
        history.skipped.append(f"{run_dir}: {cfg.data.described} is not language-model data")
        return history
    results = _read(run_dir / "results.json") if (run_dir / "results.json").is_file() else []
    split_tokens, student_tokens = _token_counts(cfg.data.model_dump_json())
    params = _counter(cfg, count)
    teacher_loss = {}
    for row in results:
        if row["kind"] == "teacher" and row.get("metric") == "test_perplexity":
            name = row["model"].removeprefix("teacher ")
            teacher_cfg = next((t for t in cfg.teachers if t.name == name), None)
            teacher_loss[name] = math.log(row["score_mean"])
            if teacher_cfg is not None and teacher_cfg.weights is None and not teacher_cfg.pretrained:
                history.supervised.append(Point(params(row["parameters"], teacher_cfg.model), float(teacher_cfg.training.epochs * split_tokens),
                                                teacher_loss[name], run=run_dir.name, phase=f"teacher {name}",
                                                teacher=name))
    for phase, metrics in sorted(phases.items()):
        if "test_nll" not in metrics:
            history.skipped.append(f"{run_dir.name}/{phase}: no held-out cross-entropy")
            continue
        tokens = float(metrics.get("tokens_seen", cfg.student.epochs * student_tokens))
        kind = phase_kind(phase)
        point = dict(params=params(metrics["parameters"], cfg.student.model), tokens=tokens, loss=float(metrics["test_nll"]),
                     run=run_dir.name, phase=phase)
        if kind == "baseline":
            history.supervised.append(Point(**point))
            continue
        teacher = _distilling_teacher(cfg, kind.removeprefix("kd:")) if kind.startswith("kd:") else None
        if teacher is None or teacher not in teacher_loss:
            history.skipped.append(f"{run_dir.name}/{phase}: not dense token-level KD from one measured teacher")
            continue
        history.distilled.append(Point(**point, teacher_loss=teacher_loss[teacher], teacher=teacher))
    return history


def collect(run_dirs: list[str | Path], count: str = "non_embedding") -> History:
    """Points of every run folder given (a folder holding run folders counts as all of them),
    with parameters counted as `count` says."""
    history = History()
    for path in map(Path, run_dirs):
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder; give run folders (runs/<name>) or a folder of them")
        runs = [path] if (path / "config.json").is_file() else sorted(p for p in path.iterdir() if p.is_dir())
        for run_dir in runs:
            history.extend(run_history(run_dir, count))
    return history
