"""The batch: the unit a student trains on and a teacher answers, keyed by a stable id, and the
plan of an epoch's batches.

Pure numpy: the train loop, the teacher trainer and the benchmarks all plan batches here, so
the same (epoch, shard, index) always names the same samples.

One type from the data plan (`plan_epoch`) to the teacher request: sources
send `batch_id` and `teacher_x`, the offline store reads `ids`, the loss reads `x`, `y`
and `columns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from ingest.splits import Split


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


def batch_id(epoch: int, shard: int, index: int) -> str:
    return f"e{epoch}-s{shard}-b{index}"


def plan_epoch(split: Split, *, epoch: int, seed: int, shard: int, num_shards: int,
               batch_size: int) -> list[Batch]:
    """The batches of one shard for one epoch, in order; the same inputs give the same plan.

    Every shard gets the same number of batches (trailing samples that would make the shards
    uneven are dropped for that epoch), so data-parallel workers step in lockstep.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(split.y))
    per_shard = len(order) // num_shards
    mine = order[shard * per_shard:(shard + 1) * per_shard]
    n_batches = per_shard // batch_size
    rows = [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    return [Batch(batch_id(epoch, shard, i), epoch, i, split.x[r], split.labels(r), r, split.teacher_inputs[r],
                  {k: v[r] for k, v in split.columns.items()}, None if split.ids is None else split.ids[r])
            for i, r in enumerate(rows)]
