"""The `continual` section of a run config and its rules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cluster import Strict
from students import refuse_zero3, snapshot_methods


class ContinualConfig(Strict):
    """Lifelong continual distillation: the students learn a sequence of tasks, one phase per
    task, each phase starting from the student of the previous task. After each task that
    student's snapshot is served as a versioned teacher for the next task (learning without
    forgetting: use the `lwf` term). The baseline (`run.baseline`) is naive fine-tuning on the
    same sequence."""

    column: str = Field("task", description="the data column that names each sample's task")
    tasks: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2,
                             description="the task values of `column`, in the order they are learned")
    replay_samples: int = Field(0, ge=0, description="training samples of each earlier task kept in memory and "
                                                     "trained on again with every later task (every method and "
                                                     "the baseline alike); 0: none")
    replay_targets: Literal["snapshot", "stored"] = Field(
        "snapshot", description="the soft targets of replayed samples in KD methods: snapshot: the previous task's "
                                "served student labels them again; stored: the student that had just learned their "
                                "task labelled them once, into the run's offline store (dark experience replay)")

    @model_validator(mode="after")
    def _stored_needs_replay(self) -> "ContinualConfig":
        if self.replay_targets == "stored" and not self.replay_samples:
            raise ValueError("replay_targets: stored keeps soft targets of replayed samples; set replay_samples > 0")
        return self

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"tasks repeat a task: {value}")
        return value


def check_continual(cfg: Any) -> None:
    if cfg.continual is None:
        return
    where = "continual"
    if cfg.teachers or snapshot_methods(cfg):
        raise ValueError(f"{where}: each task's teacher is the student of the task before; drop teachers and "
                         f"distill.methods.*.teacher_snapshot")
    if cfg.distill.mode == "offline" or not cfg.data.classification or cfg.continual.column not in cfg.data.columns:
        raise ValueError(f"{where}: task sequences run online on classification data with a {cfg.continual.column!r} "
                         f"column (the digits' own, or data.source.columns.task); got distill.mode "
                         f"{cfg.distill.mode}, {cfg.data.described} with columns {sorted(cfg.data.columns) or 'none'}")
    refuse_zero3(cfg, f"{where}: each task hands the student's weights to the next from rank 0")
