"""The soft-target source of a phase (`teachers.target_source.SoftTargetSource`), chosen by its job."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np

from students.job import StudentJob
from students.run_control import RunControl
from teachers import SoftTargetSource


def soft_target_source(job: StudentJob, control: RunControl, output_space: str, row_ids: Optional[np.ndarray],
                       planned: Callable[[], Iterable], only: Optional[set[str]]) -> Optional[SoftTargetSource]:
    """The job's source (None for a phase without teachers); `row_ids` are the rows the phase
    trains on (None for a stream), `planned()` lists every batch left to train, `only` the
    teachers of the set the phase reads (all when None)."""
    if not job.use_teachers:
        return None
    if job.source == "offline":
        from teachers import StoredTeachers

        return StoredTeachers(job.stores, control.teacher_set(), output_space=output_space,
                              temperature=job.distill.temperature, row_ids=row_ids,
                              target_kind=job.distill.target_kind)
    if job.source == "served":
        from teachers import FaultPolicy, TeacherClient

        return TeacherClient(control, output_space=output_space, temperature=job.distill.temperature,
                             prefetch=job.distill.prefetch, batches_per_request=job.distill.batches_per_request,
                             timeout_s=job.distill.request_timeout_s, top_k=job.distill.top_k,
                             dense_max_classes=job.distill.dense_max_classes,
                             target_kind=job.distill.target_kind, only=only,
                             policy=FaultPolicy.of(job.distill), phase=job.phase)
    from cluster import work_device
    from teachers import LocalTeachers

    local = LocalTeachers(control.teacher_apps(), control.teacher_set(), output_space=output_space,
                          temperature=job.distill.temperature, top_k=job.distill.top_k,
                          dense_max_classes=job.distill.dense_max_classes, target_kind=job.distill.target_kind,
                          device=work_device(job.student.gpus_per_worker, "the teachers in the train worker"))
    if job.source == "precomputed":
        local.precompute(planned())
    return local
