"""Teachers run inside the train worker, live or precomputed before training.

Two baselines for the served path (`benchmarks/pipeline.py`): `LocalTeachers` runs each
teacher's forward in the worker process; with `precompute` it computes every planned batch's
records before training starts, the upper bound where teachers cost nothing at all. Both
speak the TeacherClient's interface, so the train loop does not know which one it has.
"""

from __future__ import annotations

from typing import Iterable

import torch

from teachers.backend import ResolvedModel, file_version, load_teacher, output_space_of
from teachers.client import Batch
from teachers.deployment import TeacherAppArgs
from teachers.soft_targets import SoftTargets, pack_soft_targets, validate_soft_targets
from teachers.targets import TeacherTargets
from teachers.teacher_set import TeacherSet


class LocalTeachers:
    def __init__(self, apps: list[TeacherAppArgs], teacher_set: TeacherSet, *, output_space: str,
                 temperature: float):
        self.teacher_set = teacher_set
        self.output_space = output_space
        self.temperature = temperature
        self.wait_ms: dict[str, float] = {}
        self._apps = {a.name: a for a in apps if a.name in teacher_set.teachers}
        self._modules = {name: load_teacher(ResolvedModel(a.factory, a.kwargs, tuple(a.allowed_modules)),
                                            a.weights_path) for name, a in self._apps.items()}
        self._versions = {name: file_version(a.weights_path) for name, a in self._apps.items()}
        self._spaces = {name: output_space_of(m, a.in_features)[0]
                        for (name, m), a in zip(self._modules.items(), self._apps.values())}
        self._stored: dict[str, dict[str, SoftTargets]] = {}

    def _records(self, batch: Batch) -> dict[str, SoftTargets]:
        out = {}
        with torch.inference_mode():
            for name, module in self._modules.items():
                app = self._apps[name]
                logits = module(torch.from_numpy(batch.x)).numpy()
                out[name] = pack_soft_targets(
                    logits, batch_id=batch.batch_id, teacher=name, teacher_version=self._versions[name],
                    temperature=app.temperature, output_space=self._spaces[name],
                    dense_max_classes=app.dense_max_classes, top_k=app.top_k)
        return out

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
                                  teacher_version=self._versions[name])
        return TeacherTargets(records, self.teacher_set.weights()) if records else None

    def at_step_boundary(self) -> bool:
        return False

    def close(self) -> None:
        self._stored.clear()
