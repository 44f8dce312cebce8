"""A run whose output folder is on object storage (moto's S3-compatible server on loopback):
checkpoints written there by Ray Train, the driver killed, its working copy deleted (a new
driver on another machine), and the same command resuming from the stored checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import RunProcess, distillery
from harness.faults import CONFIGS, events, last_step, phase_final

pytestmark = pytest.mark.integration
SETTINGS = ("--set", "student.epochs=30", "--set", "student.max_failures=0")  # ~150 steps


def test_a_run_on_s3_resumes_on_a_new_driver_from_its_stored_checkpoint(ray_cluster, s3_server, tmp_path):
    s3, options = s3_server
    uri = f"s3://runs-data/exp?{options}"
    run = RunProcess(CONFIGS / "worker_kill.yaml", "s3-run", tmp_path, SETTINGS, output_uri=uri)
    try:
        run.wait_for(lambda: last_step(run) >= 22, "step 22 (checkpoints at 10 and 20)", timeout=300)
        run.wait_for(lambda: _stored_steps(s3) >= 22, "its metrics pushed to S3 while it trains", timeout=60)
    finally:
        run.kill()
    stored = [i.path for i in s3.get_file_info(_selector("runs-data/exp/s3-run/train"))]
    assert any("/checkpoint_" in p for p in stored), stored
    assert "s3://runs-data/exp/s3-run" in run.log() and "checkpoints go straight to" in run.log()
    shutil.rmtree(run.run_dir)  # nothing of the first driver's disk is left

    rerun = RunProcess(CONFIGS / "worker_kill.yaml", "s3-run", tmp_path, SETTINGS, output_uri=uri)
    assert rerun.finish(timeout=400) == 0, rerun.log()[-4000:]
    assert "files pulled" in rerun.log() and not rerun.log().count("(0 files pulled)")
    resumed = [e for e in events(rerun, "resumed") if e["phase"] == "kd-seed0"]
    assert resumed and resumed[0]["step"] >= 10, rerun.log()[-3000:]  # from the checkpoint on S3, not the start
    final = phase_final(rerun, "kd-seed0")
    assert final["batches_lost"] == 0 and final["batches_applied_twice"] == 0
    with s3.open_input_stream("runs-data/exp/s3-run/results.json") as f:
        rows = {r["kind"]: r for r in json.loads(f.read())}
    assert rows["kd"]["score_mean"] > 0.5  # the resumed student's held-out accuracy, stored beside its checkpoints
    assert s3.get_file_info("runs-data/exp/s3-run/report.md").size > 0
    shutil.rmtree(rerun.run_dir)
    report = distillery("report", "--run", "s3-run", "--output-dir", uri)
    assert report.returncode == 0 and "files pulled" in report.stdout, report.stdout + report.stderr


def _stored_steps(s3) -> int:
    """The last step in the run's metrics on S3 (0 before the first push)."""
    try:
        with s3.open_input_stream("runs-data/exp/s3-run/metrics.jsonl") as f:
            lines = f.read().decode().splitlines()
    except OSError:  # not pushed yet
        return 0
    steps = [0]
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # pushed while a line was being written
            continue
        if record.get("rank") == 0 and "step" in record:
            steps.append(record["step"])
    return max(steps)


def _selector(path: str):
    from pyarrow import fs

    return fs.FileSelector(path, recursive=True)
