"""Where each sample's rows lie in an offline store, found shard by shard without a per-row array.

A language model's store holds one row per target token, and precompute writes a sample's rows
one after another. `RowRuns` keeps one run (first row, length) per stretch of consecutive rows
of one sample, and for each sample where its runs begin: a few integers per sample, not two per
row (at 512M token rows, about 8 GB in every worker that reads the store). A store whose
samples' rows are scattered costs one run per row, what a row index costs. A sample's rows
come back in stored order (shard after shard, as the manifest lists them).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa


class RowRuns:
    """`start`/`length`: the runs, grouped by sample; `first_run[s]:first_run[s + 1]`: the runs of
    sample `s`. The last sample has no rows: a token sequence without target positions finds it."""

    def __init__(self, start: np.ndarray, length: np.ndarray, first_run: np.ndarray):
        self.start, self.length, self.first_run = start, length, first_run

    @classmethod
    def build(cls, shard_samples: Iterable[np.ndarray]) -> "RowRuns":
        """The runs of the shards whose rows belong to samples `shard_samples` (one array per
        shard, its rows' sample numbers, rows numbered one shard after the other)."""
        starts, lengths, owners, offset = [], [], [], 0
        for sample in shard_samples:
            sample = np.asarray(sample, dtype=np.int64)
            begin = np.flatnonzero(np.concatenate([[len(sample) > 0], sample[1:] != sample[:-1]]))
            starts.append(begin + offset)
            lengths.append(np.diff(np.append(begin, len(sample))))
            owners.append(sample[begin])
            offset += len(sample)
        owner = np.concatenate(owners or [np.zeros(0, np.int64)])
        order = np.argsort(owner, kind="stable")
        runs_per_sample = np.append(np.bincount(owner), 0)
        first_run = np.concatenate([[0], np.cumsum(runs_per_sample)])
        start = np.concatenate(starts or [np.zeros(0, np.int64)])[order]
        length = np.concatenate(lengths or [np.zeros(0, np.int64)])[order]
        return cls(start, length, first_run)

    @property
    def num_samples(self) -> int:
        return len(self.first_run) - 1

    @property
    def nbytes(self) -> int:
        return self.start.nbytes + self.length.nbytes + self.first_run.nbytes

    def held_samples(self) -> np.ndarray:
        """The samples with rows, ascending."""
        return np.flatnonzero(np.diff(self.first_run))

    def rows_of(self, samples: np.ndarray) -> np.ndarray:
        """Rows of `samples`, sample after sample; IndexError for a sample past the store."""
        samples = np.asarray(samples, dtype=np.int64)
        if len(samples) and (samples.min() < 0 or samples.max() >= self.num_samples):
            raise IndexError(f"sample ids {samples.min()}..{samples.max()} outside 0..{self.num_samples - 1}")
        runs = _ranges(self.first_run[samples], self.first_run[samples + 1])
        return _ranges(self.start[runs], self.start[runs] + self.length[runs])


def _ranges(begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """`begin[0]..end[0]`, then `begin[1]..end[1]`, ... as one array."""
    counts = end - begin
    before = np.cumsum(counts) - counts
    return np.repeat(begin - before, counts) + np.arange(int(counts.sum()), dtype=np.int64)


def samples_by_id(columns: list[pa.ChunkedArray]) -> tuple[np.ndarray, RowRuns]:
    """The sorted distinct row ids of the shards' id columns, and the runs of each id's rows;
    one shard at a time, in Arrow (no Python string per row)."""
    import pyarrow.compute as pc

    distinct = [pc.unique(column) for column in columns]
    ids = np.unique(np.concatenate([d.to_numpy(zero_copy_only=False).astype(str) for d in distinct]
                                   or [np.zeros(0, str)]))
    value_set = pa.array(ids, columns[0].type if columns else pa.string())
    per_shard = (pc.index_in(column, value_set=value_set).to_numpy(zero_copy_only=False) for column in columns)
    return ids, RowRuns.build(per_shard)
