"""Continual replay with stored soft targets (dark experience replay, Buzzega et al. 2020).

When a task ends, the orchestrator stores the student's soft targets on that task's memory
samples in the offline store format (`<run>/replay/<phase>`). In every later task, a
replayed sample learns from those stored targets (the student that had just learned its
task) instead of from the previous task's snapshot, which may have forgotten it; the task's
new samples keep the snapshot's targets.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from students import record_logprob
from teachers import Manifest, StoredTargets, TeacherTargets


class MemoryTargets:
    """The stored memory targets of earlier tasks, by training-set row.

    Args:
        folders: the memory stores of the earlier tasks.
        temperature: the run's KD temperature (the stores hold log-probabilities at it).
    """

    def __init__(self, folders: list[str], temperature: float):
        self.logprob: dict[int, np.ndarray] = {}
        for folder in folders:
            manifest = Manifest.read(folder)
            if abs(manifest.key.temperature - temperature) > 1e-9:
                raise ValueError(f"memory store {folder} holds targets at T={manifest.key.temperature:g}, the run "
                                 f"distils at T={temperature:g}")
            store = StoredTargets(folder, manifest)
            rows = store.held_samples()
            logprob = record_logprob(store.for_batch("memory", rows), temperature).numpy()
            self.logprob.update(zip(rows.tolist(), logprob))

    def patch(self, targets: TeacherTargets | None, rows: np.ndarray) -> tuple[TeacherTargets | None, int]:
        """`targets` with every replayed sample's distribution replaced by its stored one; and
        how many samples were replaced."""
        hits = [(i, self.logprob[int(r)]) for i, r in enumerate(rows) if int(r) in self.logprob]
        if targets is None or not hits:
            return targets, 0
        records = {}
        for name, record in targets.records.items():
            if record.logprob is None:
                raise ValueError(f"replay with stored targets patches dense records; teacher {name!r} sent "
                                 f"{record.kind} targets (raise distill.dense_max_classes)")
            patched = record.logprob.copy()
            for i, logprob in hits:  # both at the run's temperature
                patched[i] = logprob
            records[name] = replace(record, logprob=patched)
        return TeacherTargets(records, targets.weights), len(hits)
