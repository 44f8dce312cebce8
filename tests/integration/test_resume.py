"""Kill a run's driver mid-phase; the same command with the same run name resumes it."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import CONFIGS, RunProcess

pytestmark = pytest.mark.integration
STEPS = 120 * 4  # epochs x (150 samples / 2 workers // 16 per batch)


def checkpoint_steps(run: RunProcess) -> list[int]:
    return [r["step"] for r in run.metrics() if r.get("rank") == 0 and r.get("step", 0) >= 30]


def test_restart_resumes_from_last_checkpoint(ray_cluster, tmp_path):
    first = RunProcess(CONFIGS / "resume.yaml", "resume", tmp_path)
    first.wait_for(lambda: checkpoint_steps(first), "30 steps (three checkpoints)")
    first.kill()
    checkpoints = list((first.run_dir / "train" / "resume-students").glob("checkpoint_*/progress.json"))
    assert checkpoints, "no checkpoint was reported before the kill"

    second = RunProcess(CONFIGS / "resume.yaml", "resume", tmp_path)
    assert second.finish() == 0, second.log()[-4000:]
    phase = json.loads((second.run_dir / "state.json").read_text())["phases"]["kd-seed0"]
    assert phase["resumed_from_step"] >= 10 and phase["resumed_from_step"] % 10 == 0
    assert phase["steps"] == STEPS
    assert phase["applied_batches"] == STEPS
    assert "resumed from step" in second.log()
