"""Teachers run inside the train worker, live or precomputed before training.

Two baselines for the served path (`benchmarks/pipeline.py`): `LocalTeachers` runs each
teacher's forward in the worker process; with `precompute` it computes every planned batch's
records before training starts, the upper bound where teachers cost nothing at all. Both
speak the TeacherClient's interface, so the train loop does not know which one it has.
"""

from __future__ import annotations

from typing import Iterable

from teachers.client import Batch
from teachers.deployment import LoadedTeacher, TeacherAppArgs
from teachers.soft_targets import SoftTargets, validate_soft_targets
from teachers.targets import TeacherTargets
from teachers.teacher_set import TeacherSet


class LocalTeachers:
    def __init__(self, apps: list[TeacherAppArgs], teacher_set: TeacherSet, *, output_space: str,
                 temperature: float):
        self.teacher_set = teacher_set
        self.output_space = output_space
        self.temperature = temperature
        self.wait_ms: dict[str, float] = {}
        self._teachers = {a.name: LoadedTeacher.load(a) for a in apps if a.name in teacher_set.teachers}
        self._stored: dict[str, dict[str, SoftTargets]] = {}

    def _records(self, batch: Batch) -> dict[str, SoftTargets]:
        return {name: t.records([(batch.batch_id, batch.teacher_x)])[0] for name, t in self._teachers.items()}

    def precompute(self, batches: Iterable[Batch]) -> None:
        """Compute and keep the records of `batches` now, so that training pays nothing for them."""
        for batch in batches:
            self._stored[batch.batch_id] = self._records(batch)

    def plan(self, batches: Iterable[Batch]) -> None:
        """Nothing to send ahead: records are computed (or were stored) when asked for."""

    def targets_for(self, batch: Batch) -> TeacherTargets | None:
        records = self._stored.pop(batch.batch_id, None) or self._records(batch)
        for name, record in records.items():
            validate_soft_targets(record, batch_id=batch.batch_id, batch_size=len(batch.y),
                                  output_space=self.output_space, temperature=self.temperature,
                                  teacher_version=self._teachers[name].version)
        return TeacherTargets(records, self.teacher_set.weights()) if records else None

    def at_step_boundary(self) -> bool:
        return False

    def close(self) -> None:
        self._stored.clear()
