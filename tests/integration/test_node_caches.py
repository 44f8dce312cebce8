"""`distillery cache --cluster`: each alive node reports its own caches and prunes what no run
has read for the given age, through a task pinned to it; what was read lately stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import distillery


def test_the_cluster_prunes_only_what_no_run_read_lately(ray_cluster):
    mapped = Path(os.environ["DISTILLERY_CACHE_DIR"]) / "mapped"  # the session cluster's nodes' cache
    mapped.mkdir(parents=True, exist_ok=True)
    stale, lock, fresh = mapped / "stale-test.arrow", mapped / "stale-test.lock", mapped / "fresh-test.arrow"
    for path in (stale, lock, fresh):
        path.write_bytes(b"x" * 1024)
    ten_days_ago = time.time() - 10 * 86_400
    for path in (stale, lock):
        os.utime(path, (ten_days_ago, ten_days_ago))

    shown = distillery("cache", "--cluster", "--prune-older-than", "7", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "mapped" in shown.stdout and "dry run" in shown.stdout and stale.exists()
    pruned = distillery("cache", "--cluster", "--prune-older-than", "7")
    assert pruned.returncode == 0, pruned.stderr
    assert not stale.exists() and not lock.exists() and fresh.exists()
    fresh.unlink()
