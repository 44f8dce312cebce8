"""A continual run on the session's Ray cluster: three tasks learned in order, each task's
student exported, served as the versioned teacher of the next task and retired after it."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import CONFIGS, distillery

pytestmark = pytest.mark.integration


def test_tasks_hand_their_student_to_the_next_task(ray_cluster, tmp_path):
    result = distillery("run", str(CONFIGS / "continual.yaml"), "--output-dir", str(tmp_path), timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "continual"
    rows = {r["kind"]: r for r in json.loads((run_dir / "results.json").read_text())}
    assert set(rows) == {"kd:lwf", "baseline"} and rows["baseline"]["model"] == "naive fine-tuning"
    for row in rows.values():
        matrix = row["matrix"]
        assert len(matrix) == 3 and all(len(r) == 3 for r in matrix)
        assert row["score_mean"] == pytest.approx(sum(matrix[-1]) / 3)
        assert matrix[0][0] > 0.8 and matrix[0][1] == 0.0  # task 0 learned; task 1's classes never seen yet
    assert "backward transfer" in (run_dir / "results.md").read_text()
    assert "### naive fine-tuning: accuracy on each task" in result.stdout
    snapshots = sorted(p.name for p in (run_dir / "snapshots").glob("*.safetensors"))
    assert snapshots == [f"{kind}-task{k}-seed0.safetensors" for kind in ("baseline", "kd-lwf") for k in (0, 1)]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    added = [r for r in records if r.get("event") == "teacher_added"]
    assert [r["teacher"] for r in added] == ["snapshot-kd-lwf-task0-seed0", "snapshot-kd-lwf-task1-seed0"]
    assert len({r["model_version"] for r in added}) == 2  # each task's teacher is a new version
    removed = [r["teacher"] for r in records if r.get("event") == "teacher_removed"]
    assert removed == [r["teacher"] for r in added]
    taught = [r for r in records if r.get("phase") == "kd-lwf-task2-seed0" and "loss/lwf" in r]
    assert taught and all(r["teachers"] == ["snapshot-kd-lwf-task1-seed0"] for r in taught)
    naive = [r for r in records if r.get("phase", "").startswith("baseline-task") and "loss/ce" in r]
    assert naive and not any("loss/lwf" in r for r in naive)
