"""What one student training (a "phase" of a run) needs, as plain picklable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from cluster.config import DataConfig, DistillConfig, StudentConfig
from teachers.backend import ResolvedModel


@dataclass
class StudentJob:
    """One student training: the KD student for a seed, or its no-KD baseline.

    Args:
        phase: name of this training within the run ("kd-seed0", "baseline-seed0").
        loss: registered loss name ("hinton_kd", "logit_mse", "ce").
        use_teachers: whether the worker asks the teacher set for soft targets.
        orchestrator: the run's orchestrator actor handle (teacher set, progress sink).
        source: where soft targets come from: "served" (Serve or gRPC teachers, the normal
            path), "offline" (the Parquet store of `distillery precompute`), "local" (teachers
            run in the worker) or "precomputed" (computed before training); the last two are
            baselines for `benchmarks/pipeline.py`.
        stores: for "offline", the store folder of each teacher.
    """

    phase: str
    seed: int
    loss: str
    use_teachers: bool
    model: ResolvedModel
    student: StudentConfig
    distill: DistillConfig
    data: DataConfig
    orchestrator: Optional[Any] = None
    source: Literal["served", "offline", "local", "precomputed"] = "served"
    stores: dict[str, str] = field(default_factory=dict)
