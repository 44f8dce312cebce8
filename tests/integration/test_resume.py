"""A continual run (three tasks learned in order; each task's student exported, served as the
versioned teacher of the next task and retired after it; each task's memory labelled into a
store that later tasks replay from) whose
driver is killed mid-task: the same command with the same run name resumes it from the last
checkpoint, serves the earlier task's snapshot again, and finishes with the continual results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster.config import DataConfig
from students.data import load_dataset
from tests.integration.conftest import CONFIGS, RunProcess

pytestmark = pytest.mark.integration
EPOCHS, BATCH, WORKERS, MEMORY = 3, 16, 2, 8
KILLED = "kd-lwf-task1-seed0"  # killed while task 1 learns from the served student of task 0


def steps_of_task(task: int) -> int:
    samples = int((load_dataset(DataConfig()).train.columns["task"] == task).sum()) + MEMORY * task
    return EPOCHS * ((samples // WORKERS) // BATCH)


def killed_phase_steps(run: RunProcess) -> list[int]:
    return [r["step"] for r in run.metrics() if r.get("phase") == KILLED and r.get("rank") == 0 and r.get("step", 0) >= 12]


def test_killed_continual_run_resumes_and_hands_each_task_to_the_next(ray_cluster, tmp_path):
    first = RunProcess(CONFIGS / "continual.yaml", "continual", tmp_path)
    first.wait_for(lambda: killed_phase_steps(first), f"{KILLED} past step 12 (three checkpoints)")
    first.kill()
    assert list((first.run_dir / "train" / "continual-students").glob("checkpoint_*/progress.json"))

    second = RunProcess(CONFIGS / "continual.yaml", "continual", tmp_path)
    assert second.finish() == 0, second.log()[-4000:]
    log = second.log()
    assert "resumed from step" in log and "### student (KD: lwf): accuracy on each task" in log
    phases = json.loads((second.run_dir / "state.json").read_text())["phases"]
    resumed = phases[KILLED]
    assert resumed["resumed_from_step"] >= 4 and resumed["resumed_from_step"] % 4 == 0
    assert resumed["steps"] == resumed["applied_batches"] == steps_of_task(1)

    rows = {r["kind"]: r for r in json.loads((second.run_dir / "results.json").read_text())}
    assert set(rows) == {"kd:lwf"}
    for row in rows.values():
        matrix = np.array(row["matrix"])
        assert matrix.shape == (3, 3) and row["score_mean"] == pytest.approx(matrix[-1].mean())
        assert matrix[0, 0] > 0.8 and matrix[0, 1] == 0.0  # task 0 learned; task 1's classes not seen yet
        assert row["backward_transfer_mean"] == pytest.approx(np.mean([matrix[2, j] - matrix[j, j] for j in (0, 1)]))
    assert "backward transfer" in (second.run_dir / "results.md").read_text()

    snapshots = sorted(p.name for p in (second.run_dir / "snapshots").glob("*.safetensors"))
    assert snapshots == [f"kd-lwf-task{k}-seed0.safetensors" for k in (0, 1)]
    records = second.metrics()  # both drivers' records
    added = {r["teacher"]: r["model_version"] for r in records if r.get("event") == "teacher_added"}
    assert set(added) == {"snapshot-kd-lwf-task0-seed0", "snapshot-kd-lwf-task1-seed0"}
    assert len(set(added.values())) == 2  # each task's teacher is a new version
    removed = {r["teacher"] for r in records if r.get("event") == "teacher_removed"}
    assert removed == set(added)
    taught = [r for r in records if r.get("phase") == "kd-lwf-task2-seed0" and "loss/lwf" in r]
    assert taught and all(r["teachers"] == ["snapshot-kd-lwf-task1-seed0"] for r in taught)
    stored = sorted(r["phase"] for r in records if r.get("event") == "memory_stored")
    assert stored == ["kd-lwf-task0-seed0", "kd-lwf-task1-seed0"]  # task 0's store outlived the killed driver
    assert sorted(p.name for p in (second.run_dir / "replay").iterdir()) == stored
    replayed = [r["replay/stored_targets"] for r in taught if "replay/stored_targets" in r]
    assert replayed and sum(replayed) > 0
