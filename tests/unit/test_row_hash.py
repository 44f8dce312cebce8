"""Row keys, hashes, held-out membership and fingerprints: vectorized, yet the function their
documentation states (a per-row reference in plain Python ints), additive across chunks, and
sensitive to every byte of a row."""

import hashlib

import numpy as np
from pandas.util import hash_array

from ingest.row_hash import FINGERPRINT_VERSION, RowsDigest, held_out_by_id, row_hashes, row_keys, rows_fingerprint

MASK = 2 ** 64 - 1


def _mix(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def _reference_hash(row_id: str, x: np.ndarray, y: int) -> int:
    """One row's hash, one Python int operation at a time."""
    key = int(hash_array(np.array([row_id], dtype=object))[0])
    raw = x.tobytes()
    h = _mix(key ^ len(raw))
    raw += b"\0" * (-len(raw) % 8)
    for word in range(len(raw) // 8):
        h = _mix(((h ^ int.from_bytes(raw[8 * word:8 * word + 8], "little")) + 0x9E3779B97F4A7C15) & MASK)
    return _mix(h ^ (y & MASK))


def _rows(n=50, width=7, seed=0):
    rng = np.random.default_rng(seed)
    return (np.array([f"row-{i}" for i in range(n)]), rng.normal(size=(n, width)).astype(np.float32),
            rng.integers(0, 10, n))


def test_row_hashes_are_the_documented_function_of_each_row():
    ids, x, y = _rows()
    expected = [_reference_hash(ids[i], x[i], int(y[i])) for i in range(len(ids))]
    assert row_hashes(ids, x, y).tolist() == expected
    tokens = np.random.default_rng(1).integers(0, 50_000, size=(20, 13))  # token sequences: int64, odd length
    assert row_hashes(ids[:20], tokens, np.zeros(20, np.int64)).tolist() == [
        _reference_hash(ids[i], tokens[i], 0) for i in range(20)]


def test_every_byte_of_a_row_changes_its_hash_and_no_other():
    ids, x, y = _rows()
    base = row_hashes(ids, x, y)
    flipped = x.copy()
    flipped.view(np.uint8)[3, 5] ^= 1
    changed = row_hashes(ids, flipped, y) != base
    assert changed.tolist() == [i == 3 for i in range(len(ids))]
    assert (row_hashes(ids, x, y + 1) != base).all()
    assert (row_hashes(np.array([i + "x" for i in ids]), x, y) != base).all()
    assert (row_hashes(ids, x.astype(np.float64), y) != base).all()  # the inputs' dtype is part of the row


def test_digests_add_up_across_chunks_in_any_order():
    ids, x, y = _rows(200)
    hashes = row_hashes(ids, x, y)
    whole = RowsDigest.of(hashes)
    parts = [RowsDigest.of(row_hashes(ids[a:b], x[a:b], y[a:b])) for a, b in ((150, 200), (0, 60), (60, 150))]
    assert sum(parts, RowsDigest()) == whole
    assert whole.fingerprint("classes:10") == rows_fingerprint("classes:10", hashes[::-1])
    assert RowsDigest.of(hashes[1:]).fingerprint("classes:10") != whole.fingerprint("classes:10")  # a row lost
    doubled = RowsDigest.of(np.concatenate([hashes, hashes[:1]]))
    assert doubled.fingerprint("classes:10") != whole.fingerprint("classes:10")  # a row twice
    assert whole.fingerprint("classes:11") != whole.fingerprint("classes:10")
    text = f"v{FINGERPRINT_VERSION}|classes:10|{whole.rows}|{whole.first:016x}|{whole.second:016x}"
    assert whole.fingerprint("classes:10") == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_held_out_membership_follows_the_id_alone():
    ids = np.array([f"doc-{i}" for i in range(100_000)])
    held = held_out_by_id(ids, 0.05)
    assert abs(held.mean() - 0.05) < 0.003
    order = np.random.default_rng(0).permutation(len(ids))
    assert (held_out_by_id(ids[order], 0.05) == held[order]).all()  # order and neighbours do not matter
    assert (held_out_by_id(ids[:10], 0.05) == held[:10]).all()
    assert held_out_by_id(ids, 0.1)[held].all()  # a larger share keeps the smaller one's rows
    assert (row_keys(ids).view(np.uint64)[held] < np.uint64(int(0.05 * 2 ** 64))).all()
