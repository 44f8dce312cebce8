"""Row keys, row hashes, held-out membership and split fingerprints, vectorized (numpy and
pandas' `hash_array`, no per-row Python).

- `row_keys(ids)`: an int64 key per row id (SipHash-2-4 with pandas' fixed key), what id
  uniqueness is checked on and what the offline store's `sample` column holds;
- `held_out_by_id(ids, fraction)`: whether a row belongs to the test split that `test_fraction`
  holds out of train, from its key alone (never from its order or the other rows);
- `row_hashes(ids, x, y)`: a uint64 per row of its id, inputs and label;
- `RowsDigest`: a split's rows summed into three integers (count and two sums of hashes modulo
  2^64) that add up file by file and task by task, in any order, so a split's fingerprint never
  needs every row in one place.

`FINGERPRINT_VERSION` is part of every fingerprint: a change to these functions bumps it, and
offline stores and cached teachers keyed by an older fingerprint are made again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

FINGERPRINT_VERSION = 2  # 1: blake2b per row, sha256 of the sorted hashes; 2: this module
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SECOND = np.uint64(0xD6E8FEB86659FD93)  # keys the second sum of `RowsDigest`


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, element-wise on uint64 (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def row_keys(ids: np.ndarray) -> np.ndarray:
    """int64 [N]: a key per row id (the id's text, SipHash-2-4 with pandas' fixed key)."""
    from pandas.util import hash_array

    return hash_array(np.asarray(ids, dtype=object), categorize=False).view(np.int64)  # ids are unique: no factorizing


def held_out_by_id(ids: np.ndarray, fraction: float) -> np.ndarray:
    """bool [N]: whether each row is in the test split, its key as a fraction of 2^64 below
    `fraction`: a row's side never depends on the order of the rows or on the other rows."""
    keys = row_keys(ids).view(np.uint64)
    return keys < np.uint64(min(int(fraction * 2.0 ** 64), 2 ** 64 - 1))


def _words(x: np.ndarray) -> np.ndarray:
    """uint64 [N, W]: each row's bytes, zero-padded to whole 8-byte words."""
    x = np.ascontiguousarray(x)
    raw = x.reshape(len(x), -1).view(np.uint8) if x.size else np.zeros((len(x), 0), np.uint8)
    pad = -raw.shape[1] % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(raw), pad), np.uint8)], axis=1)
    return np.ascontiguousarray(raw).view(np.uint64)


def row_hashes(ids: np.ndarray, x: np.ndarray, y: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """uint64 [N]: a hash of each row's id, inputs (their dtype's bytes) and label; `keys`: the
    ids' `row_keys` when the caller has them."""
    keys = row_keys(ids) if keys is None else keys
    with np.errstate(over="ignore"):
        h = _mix(keys.view(np.uint64) ^ np.uint64(len(x[0].tobytes()) if len(x) else 0))
        for column in _words(x).T:
            h = _mix((h ^ column) + _GOLDEN)
        return _mix(h ^ np.asarray(y, np.int64).view(np.uint64))


@dataclass(frozen=True)
class RowsDigest:
    """A multiset of rows as three integers: their count and two sums of their hashes modulo
    2^64. Digests of disjoint parts add up to the digest of the whole, in any order."""

    rows: int = 0
    first: int = 0
    second: int = 0

    @classmethod
    def of(cls, hashes: np.ndarray) -> "RowsDigest":
        hashes = np.asarray(hashes, np.uint64)
        with np.errstate(over="ignore"):
            first = int(np.sum(hashes, dtype=np.uint64))
            second = int(np.sum(_mix(hashes ^ _SECOND), dtype=np.uint64))
        return cls(len(hashes), first, second)

    def __add__(self, other: "RowsDigest") -> "RowsDigest":
        return RowsDigest(self.rows + other.rows, (self.first + other.first) % 2 ** 64,
                          (self.second + other.second) % 2 ** 64)

    def fingerprint(self, output_space: str) -> str:
        """16 hex digits naming these rows in `output_space`: the offline store's and the teacher
        cache's key."""
        text = f"v{FINGERPRINT_VERSION}|{output_space}|{self.rows}|{self.first:016x}|{self.second:016x}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def rows_fingerprint(output_space: str, hashes: np.ndarray) -> str:
    """The fingerprint of a set of rows from their `row_hashes`, in any order and any chunks."""
    return RowsDigest.of(hashes).fingerprint(output_space)
