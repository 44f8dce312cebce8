"""The batch: the unit a student trains on and a teacher answers, keyed by a stable id.

One type from the data layer (`students.data.plan_epoch`) to the teacher request: sources
send `batch_id` and `teacher_x`, the offline store reads `ids`, the loss reads `x`, `y`
and `columns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Batch:
    batch_id: str  # "e{epoch}-s{shard}-b{index}", or a regime's own prefix (generated, speculative)
    epoch: int
    index: int
    x: np.ndarray  # the student's inputs
    y: np.ndarray  # labels: one per sample, or per target position of token sequences
    samples: np.ndarray  # rows of the split (-1: a streamed batch's rows have no positions)
    teacher_x: np.ndarray  # the teachers' inputs: `x`, or the other modality of cross-modal pairs
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    ids: Optional[np.ndarray] = None  # the samples' row ids: the offline store's key

    @classmethod
    def of_inputs(cls, batch_id: str, x: np.ndarray) -> "Batch":
        """A batch of inputs outside any split (generated inputs): no labels, no sample rows;
        the teachers read the student's inputs."""
        none = np.zeros(len(x), dtype=np.int64)
        return cls(batch_id, -1, -1, x, none, none, x)

    def payload(self) -> dict:
        """What a Serve teacher reads of the batch (its `__call__`'s `batches` entries)."""
        return {"batch_id": self.batch_id, "inputs": self.teacher_x}
