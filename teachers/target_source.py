"""The soft-target source: how a train worker gets its teachers' targets for a batch.

Three implementations speak it, so the train loop never asks which one it has:
- `teachers.client.TeacherClient`: served teachers (Serve apps, external gRPC endpoints),
  requests kept ahead of training; the normal path;
- `teachers.store.StoredTeachers`: the offline Parquet store of `distillery precompute`;
- `teachers.local.LocalTeachers`: teachers run inside the worker (the baselines of
  `benchmarks/pipeline.py`).

The run side that a source may ask about the teacher set is `TeacherSetSource`; the train
worker's run control (`students.run_control.RunControl`) is one.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Protocol

from ingest import Batch
from teachers.soft_targets import SoftTargets, validate_soft_targets
from teachers.targets import TeacherTargets
from teachers.teacher_set import TeacherSet


class TeacherSetSource(Protocol):
    """What a soft-target source may ask the run about its teachers."""

    def teacher_set(self) -> TeacherSet:
        """The current teacher set (blocking)."""

    def teacher_set_version_nowait(self) -> Optional[int]:
        """The newest version heard of since the last call, or None when no answer has come
        in yet; never blocks (a new question is sent when the last one was answered)."""

    def teacher_lost(self, name: str, reason: str) -> TeacherSet:
        """Report that `name` gave no targets after its retries; return the set without it."""


class SoftTargetSource(Protocol):
    """The train loop's view of its teachers.

    `teacher_set` is the set the source reads now; `plan` announces the batches the worker
    will ask for next, in order (a lazy iterable: served teachers request ahead of training);
    `request` asks at once for a batch outside the plan (generated inputs); `targets_for`
    returns the validated, weighted records for a batch (None: no teacher answered);
    `at_step_boundary` adopts a new teacher-set version without blocking (True when it
    changed); `metrics` gives the keys of a metric record (`teacher/<name>/wait_ms`, ...,
    `faults/<kind>`); `close` drops what is in flight.
    """

    teacher_set: TeacherSet

    def plan(self, batches: Iterable[Batch]) -> None: ...

    def request(self, batch: Batch) -> None: ...

    def targets_for(self, batch: Batch) -> Optional[TeacherTargets]: ...

    def at_step_boundary(self) -> bool: ...

    def metrics(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class RecordSource:
    """What every source shares: its teacher set, the run's output space, temperature and the
    kind of sparse record it asked for (topk or sampled), the
    check of each record before a student sees it, and the no-op defaults of sources that
    hold their records already (nothing to plan, nothing to poll)."""

    def __init__(self, teacher_set: TeacherSet, *, output_space: str, temperature: float, target_kind: str = "topk"):
        self.teacher_set = teacher_set
        self.output_space = output_space
        self.temperature = temperature
        self.target_kind = target_kind
        self.wait_ms: dict[str, float] = {}

    def checked(self, record: Any, batch: Batch, version: Optional[str]) -> SoftTargets:
        """`record` validated against the batch, the run and the teacher's version (None: any)."""
        return validate_soft_targets(record, batch_id=batch.batch_id, batch_size=len(batch.y),
                                     output_space=self.output_space, temperature=self.temperature,
                                     teacher_version=version, target_kind=self.target_kind)

    def merged(self, records: dict[str, SoftTargets]) -> Optional[TeacherTargets]:
        return TeacherTargets(records, self.teacher_set.weights()) if records else None

    def plan(self, batches: Iterable[Batch]) -> None:
        """Nothing to request ahead: records are read or computed when asked for."""

    def request(self, batch: Batch) -> None:
        """Nothing to send: `targets_for` computes or reads the batch's records."""

    def at_step_boundary(self) -> bool:
        return False

    def metrics(self) -> dict[str, Any]:
        return {f"teacher/{name}/wait_ms": ms for name, ms in self.wait_ms.items()}

    def close(self) -> None:
        """Nothing in flight."""
