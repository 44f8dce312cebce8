"""The batch: the unit a student trains on and a teacher answers, keyed by a stable id, and the
plan of an epoch's batches.

Pure numpy: the train loop, the teacher trainer and the benchmarks all plan batches here, so
the same (epoch, shard, index) always names the same samples.

One type from the data plan (`plan_epoch`) to the teacher request: sources
send `batch_id` and `teacher_x`, the offline store reads `ids`, the loss reads `x`, `y`
and `columns`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional

import numpy as np

from ingest.token_layout import sequence_lengths

if TYPE_CHECKING:
    from ingest.splits import Split


_PLANNED = re.compile(r"e(-?\d+)-s(\d+)-b(\d+)")
_STREAMED = re.compile(r"e(-?\d+)-r([0-9a-f]+)")
DERIVED = "~"  # joins a batch's id and the rewrites a regime made of it


@dataclass(frozen=True, order=True)
class BatchId:
    """A batch's identity, one type from the data plan to the audit.

    A batch is planned (an epoch's `index`-th batch of data-parallel rank `shard`), streamed (an
    epoch's batch of a stream, named by its rows' ids), or made by a regime outside any plan
    (`made`: a generator's step, a precompute block); a regime that rewrites a batch derives its
    id (`derived`: speculative KD's interleaved sequences). The wire formats (the Serve payload,
    gRPC, Arrow metadata, the ledger and the audit files) carry `str(batch_id)`, and
    `BatchId.parse` gives the same id back: e0-s1-b4, e0-r3f2a..., gen-kd-r0-7, e0-s1-b4~skd.
    """

    epoch: int = -1
    shard: int = -1
    index: int = -1
    rows: str = ""  # a streamed batch's rows' key (`ingest.streamed.rows_key`)
    made: str = ""
    derived: tuple[str, ...] = ()

    @classmethod
    def planned(cls, epoch: int, shard: int, index: int) -> "BatchId":
        return cls(epoch, shard, index)

    @classmethod
    def streamed(cls, epoch: int, rows: str) -> "BatchId":
        return cls(epoch, rows=rows)

    @classmethod
    def made_by(cls, name: str) -> "BatchId":
        """A batch a regime makes outside any plan; `name` says who and which (unique in its run)."""
        made = cls.parse(name)
        if made.made != name:
            raise ValueError(f"batch name {name!r} reads as another kind of batch id; name made batches otherwise")
        return made

    def derive(self, how: str) -> "BatchId":
        """The id of this batch as a regime rewrote it (`how`: a short name of the rewrite)."""
        if not how or DERIVED in how:
            raise ValueError(f"a rewrite's name must be non-empty and hold no {DERIVED!r}: {how!r}")
        return replace(self, derived=self.derived + (how,))

    @classmethod
    def parse(cls, text: str) -> "BatchId":
        """The id `str(batch_id)` wrote: any text is an id (a made batch's, when it has no
        other form), so an id from another TeacherService client comes back as it was sent."""
        base, *derived = str(text).split(DERIVED)
        if planned := _PLANNED.fullmatch(base):
            return cls(int(planned[1]), int(planned[2]), int(planned[3]), derived=tuple(derived))
        if streamed := _STREAMED.fullmatch(base):
            return cls(int(streamed[1]), rows=streamed[2], derived=tuple(derived))
        return cls(made=base, derived=tuple(derived))

    def __str__(self) -> str:
        if self.made or (self.shard < 0 and not self.rows):
            base = self.made
        elif self.rows:
            base = f"e{self.epoch}-r{self.rows}"
        else:
            base = f"e{self.epoch}-s{self.shard}-b{self.index}"
        return DERIVED.join((base, *self.derived))

    def __repr__(self) -> str:  # what error messages quote
        return repr(str(self))


@dataclass(frozen=True)
class Batch:
    batch_id: BatchId
    epoch: int
    index: int
    x: np.ndarray  # the student's inputs
    y: np.ndarray  # labels: one per sample, or per target position of token sequences
    samples: np.ndarray  # rows of the split (-1: a streamed batch's rows have no positions)
    teacher_x: np.ndarray  # the teachers' inputs: `x`, or the other modality of cross-modal pairs
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    ids: Optional[np.ndarray] = None  # the samples' row ids: the offline store's key

    def __post_init__(self) -> None:
        if not isinstance(self.batch_id, BatchId):  # its text form, as the wire formats carry it
            object.__setattr__(self, "batch_id", BatchId.parse(self.batch_id))

    @classmethod
    def of_inputs(cls, batch_id: BatchId, x: np.ndarray) -> "Batch":
        """A batch of inputs outside any split (generated inputs): no labels, no sample rows;
        the teachers read the student's inputs."""
        none = np.zeros(len(x), dtype=np.int64)
        return cls(batch_id, -1, -1, x, none, none, x)

    def payload(self) -> dict:
        """What a Serve teacher reads of the batch (its `__call__`'s `batches` entries)."""
        return {"batch_id": str(self.batch_id), "inputs": self.teacher_x}


def plan_epoch(split: Split, *, epoch: int, seed: int, shard: int, num_shards: int,
               batch_size: int, length_buckets: int = 0) -> list[Batch]:
    """The batches of one shard for one epoch, in order; the same inputs give the same plan.

    Every shard gets the same number of batches (trailing samples that would make the shards
    uneven are dropped for that epoch), so data-parallel workers step in lockstep.
    `length_buckets` (packed token sequences): `_bucketed`.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(split.y))
    per_shard = len(order) // num_shards
    mine = order[shard * per_shard:(shard + 1) * per_shard]
    n_batches = per_shard // batch_size
    if length_buckets > 1 and n_batches:
        kept = mine[:n_batches * batch_size]
        rows = _bucketed(kept, sequence_lengths(split.x[kept]), batch_size, length_buckets,
                         np.random.default_rng([seed, epoch, shard, 1]))
    else:
        rows = [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    return [Batch(BatchId.planned(epoch, shard, i), epoch, i, split.x[r], split.labels(r), r, split.teacher_inputs[r],
                  {k: v[r] for k, v in split.columns.items()}, None if split.ids is None else split.ids[r])
            for i, r in enumerate(rows)]


def _bucketed(rows: np.ndarray, lengths: np.ndarray, batch_size: int, window: int,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of rows of similar lengths: the shuffled rows in windows of `window` batches, each
    window sorted by length and cut into batches, whose order is shuffled within the window (a
    model never computes the padding after a batch's longest sequence)."""
    batches = []
    for start in range(0, len(rows), window * batch_size):
        part = rows[start:start + window * batch_size]
        part = part[np.argsort(lengths[start:start + window * batch_size], kind="stable")]
        cut = [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        batches += [cut[i] for i in rng.permutation(len(cut))]
    return batches
