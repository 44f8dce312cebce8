"""A node's caches: entries grouped by key, pruned by last use, the teacher cache left alone."""

import os
import time

from cluster.node_cache import cache_entries, cache_summary, mark_used, prune_cache

DAY = 86_400.0


def _file(path, size, age_days, now):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_entries_unused_for_the_age_are_pruned_with_their_lock_and_side_files(tmp_path):
    now = time.time()
    old_copy = _file(tmp_path / "mapped" / "aaa.arrow", 100, 10, now)
    old_lock = _file(tmp_path / "mapped" / "aaa.lock", 0, 10, now)
    fresh_copy = _file(tmp_path / "mapped" / "bbb.arrow", 50, 1, now)
    scan = _file(tmp_path / "scans" / "ccc.npz", 20, 9, now)
    held = _file(tmp_path / "scans" / "ccc.held.arrow", 30, 9, now)
    fetched = _file(tmp_path / "fetched" / "ddd" / "teacher.safetensors", 70, 30, now)
    teacher = _file(tmp_path / "teachers" / "mlp-1.safetensors", 10, 99, now)
    sizes = cache_summary(cache_entries(tmp_path))
    assert sizes["mapped"] == {"entries": 2, "bytes": 150} and sizes["scans"] == {"entries": 1, "bytes": 50}

    planned = prune_cache(tmp_path, 7 * DAY, dry_run=True, now=now)
    assert sorted(e.kind for e in planned) == ["fetched", "mapped", "scans"] and old_copy.exists()
    removed = prune_cache(tmp_path, 7 * DAY, now=now)
    assert sum(e.bytes for e in removed) == 100 + 50 + 70
    assert not any(p.exists() for p in (old_copy, old_lock, scan, held, fetched.parent))
    assert fresh_copy.exists() and teacher.exists()
    assert prune_cache(tmp_path, 7 * DAY, kinds=["mapped"], now=now + 7 * DAY) and not fresh_copy.exists()


def test_a_touched_entry_counts_as_used(tmp_path):
    now = time.time()
    copy = _file(tmp_path / "mapped" / "aaa.arrow", 10, 10, now)
    mark_used(copy, tmp_path / "mapped" / "gone.arrow")  # a vanished entry is left alone
    assert prune_cache(tmp_path, 7 * DAY) == [] and copy.exists()
