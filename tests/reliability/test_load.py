"""Several students on one teacher with tight Serve queue limits: rejections are retried and
no batch is lost (the full 1-8 student table is `python -m benchmarks.reliability`)."""

from __future__ import annotations

import pytest

from harness.faults import load

pytestmark = pytest.mark.integration


def test_students_beyond_the_queue_limit_retry_and_lose_nothing(ray_cluster, tmp_path):
    rows = load(tmp_path, students=(1, 4), batches=40)
    print("load:", rows)
    assert [r["lost"] for r in rows] == [0, 0]
    assert [r["batches"] for r in rows] == [40, 160]
    assert rows[-1]["backpressure_retries"] > 0  # 8 in flight per student against 1 running + 2 queued
    assert all(r["other_retries"] == 0 for r in rows)
