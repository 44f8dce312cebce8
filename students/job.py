"""What one student training (a "phase" of a run) needs, as plain picklable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Type, TypeVar

from ingest import DataConfig
from students.config import DistillConfig, StudentConfig
from students.hooks import PhaseHook
from students.losses import Term
from students.run_control import RunControl
from students.weighting import Weighting
from teachers import ResolvedModel

H = TypeVar("H", bound=PhaseHook)


@dataclass
class StudentJob:
    """One student training: the KD student for a seed, or its no-KD baseline.

    Args:
        phase: name of this training within the run ("kd-seed0", "baseline-seed0").
        terms: the weighted loss terms (students.losses.Term); the baseline has only "ce".
        use_teachers: whether the worker asks the teacher set for soft targets.
        control: the run control (`students.run_control.RunControl`): teacher set, progress,
            stop, resume, snapshots.
        source: where soft targets come from: "served" (Serve or gRPC teachers, the normal
            path), "offline" (the Parquet store of `distillery precompute`), "local" (teachers
            run in the worker) or "precomputed" (computed before training); the last two are
            baselines for `benchmarks/pipeline.py`.
        stores: for "offline", the store folder of each teacher.
        train: False scores the student as initialized (the untrained baseline of encoders).
        init_seed: the seed of the student's initial weights (default `seed`, so a KD student and
            its baseline start alike).
        teachers: the teachers of the run this phase learns from (all when None).
        weighting: how those teachers' soft targets merge per sample (students.weighting).
        trainer: the trainer that runs this phase, when a run has several (co-training peers);
            it labels the phase's metric records.
        export_dir: where the trained student is written at the end of the phase (a language
            model in Hugging Face layout, any other as `model.safetensors`); None: not exported.
        hooks: what the phase's regimes add to the loop (`students.hooks`), in calling order.
    """

    phase: str
    seed: int
    terms: list[Term]
    use_teachers: bool
    model: ResolvedModel
    student: StudentConfig
    distill: DistillConfig
    data: DataConfig
    control: Optional[RunControl] = None
    source: Literal["served", "offline", "local", "precomputed"] = "served"
    stores: dict[str, str] = field(default_factory=dict)
    train: bool = True
    init_seed: Optional[int] = None
    teachers: Optional[list[str]] = None
    weighting: Weighting = field(default_factory=Weighting)
    trainer: Optional[str] = None
    export_dir: Optional[str] = None
    hooks: tuple[PhaseHook, ...] = ()

    def hook(self, kind: Type[H]) -> Optional[H]:
        """The job's hook of type `kind`, or None."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)
