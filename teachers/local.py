"""Teachers run inside the train worker, live or precomputed before training.

Two baselines for the served path (`benchmarks/pipeline.py`): `LocalTeachers` runs each
teacher's forward in the worker process; with `precompute` it computes every planned batch's
records before training starts, the upper bound where teachers cost nothing at all. Both
speak `teachers.target_source.SoftTargetSource`, so the train loop does not know which one it has.
"""

from __future__ import annotations

from typing import Iterable

from ingest import Batch
from teachers.loaded import LoadedTeacher, TeacherAppArgs
from teachers.soft_targets import SoftTargets
from teachers.target_source import RecordSource
from teachers.targets import TeacherTargets
from teachers.teacher_set import TeacherSet


class LocalTeachers(RecordSource):
    def __init__(self, apps: list[TeacherAppArgs], teacher_set: TeacherSet, *, output_space: str,
                 temperature: float, top_k: int = 0, dense_max_classes: int = 0, target_kind: str = "topk",
                 device: str = "cpu"):
        super().__init__(teacher_set, output_space=output_space, temperature=temperature, target_kind=target_kind)
        self._teachers = {a.name: LoadedTeacher.load(a, device) for a in apps if a.name in teacher_set.teachers}
        self._settings = dict(temperature=temperature, top_k=top_k or None, dense_max_classes=dense_max_classes or None,
                              target_kind=target_kind)
        self._stored: dict[str, dict[str, SoftTargets]] = {}

    def _records(self, batch: Batch) -> dict[str, SoftTargets]:
        return {name: t.records([batch], **self._settings)[0] for name, t in self._teachers.items()}

    def precompute(self, batches: Iterable[Batch]) -> None:
        """Compute and keep the records of `batches` now, so that training pays nothing for them."""
        for batch in batches:
            self._stored[batch.batch_id] = self._records(batch)

    def targets_for(self, batch: Batch) -> TeacherTargets | None:
        records = self._stored.pop(batch.batch_id, None) or self._records(batch)
        return self.merged({name: self.checked(record, batch, self._teachers[name].version)
                            for name, record in records.items()})

    def close(self) -> None:
        self._stored.clear()
