"""A continual run (two tasks learned in order; the first task's student exported, served as the
versioned teacher of the second and retired after it; its memory labelled into a store that
the second task replays from) whose driver is killed during the second task: the same command
with the same run name resumes it from the last checkpoint, serves the first task's snapshot
again, and finishes with the continual results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest.config import DataConfig
from ingest.loading import load_dataset
from tests.conftest import CONFIGS, RunProcess
from harness.faults import exactly_once

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
    audit = second.audit()  # both drivers' workers and replicas, read from their own audit files
    exactly_once(audit, KILLED, planned=WORKERS * steps_of_task(1))
    assert audit["exactly_once"] and len(audit["phases"]) == 2

    rows = {r["kind"]: r for r in json.loads((second.run_dir / "results.json").read_text())}
    assert set(rows) == {"kd:lwf"}
    for row in rows.values():
        matrix = np.array(row["matrix"])
        assert matrix.shape == (2, 2) and row["score_mean"] == pytest.approx(matrix[-1].mean())
        assert matrix[0, 0] > 0.8 and matrix[0, 1] == 0.0  # task 0 learned; task 1's classes not seen yet
        assert row["backward_transfer_mean"] == pytest.approx(matrix[1, 0] - matrix[0, 0])
    assert "backward transfer" in (second.run_dir / "results.md").read_text()

    snapshots = sorted(p.name for p in (second.run_dir / "snapshots").glob("*.safetensors"))
    assert snapshots == ["kd-lwf-task0-seed0.safetensors"]
    records = second.metrics()  # both drivers' records
    added = [r for r in records if r.get("event") == "teacher_added"]
    assert {r["teacher"] for r in added} == {"snapshot-kd-lwf-task0-seed0"}
    assert len(added) >= 2 and len({r["model_version"] for r in added}) == 1  # served again after the resume
    removed = {r["teacher"] for r in records if r.get("event") == "teacher_removed"}
    assert removed == {"snapshot-kd-lwf-task0-seed0"}
    taught = [r for r in records if r.get("phase") == KILLED and "loss/lwf" in r]
    assert taught and all(r["teachers"] == ["snapshot-kd-lwf-task0-seed0"] for r in taught)
    stored = sorted(r["phase"] for r in records if r.get("event") == "memory_stored")
    assert stored == ["kd-lwf-task0-seed0"]  # stored before the kill, replayed after it
    assert sorted(p.name for p in (second.run_dir / "replay").iterdir()) == stored
    replayed = [r["replay/stored_targets"] for r in taught if "replay/stored_targets" in r]
    assert replayed and sum(replayed) > 0
