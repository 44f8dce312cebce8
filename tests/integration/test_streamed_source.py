"""A streamed source (`data.source.stream: true`): the students read the user's Parquet through
Ray Data, each of 2 Train workers from its dataset shard under ZeRO-2, with a served teacher.
A train worker is killed mid-epoch: the run resumes from its checkpoint, the steps trained
again give the losses they gave the first time (the stream's order is fixed), the ledger over
both workers shows no batch lost or applied twice, and the KD student still beats its no-KD
baseline on Hinton's transfer set without 3s."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import REPO, RunProcess, distillery, own_digits
from harness.faults import events, last_step, losses, phase_final, train_workers

pytestmark = pytest.mark.integration
STEPS_PER_EPOCH = 9  # 300 transfer rows over 2 workers in micro-batches of 16


def test_a_streamed_run_killed_mid_epoch_resumes_exactly_once(ray_cluster, tmp_path):
    data = tmp_path / "digits"
    sets = {**own_digits(data), "data.source.stream": "true", "run.seeds": "[0]",
            "student.epochs": "20", "student.checkpoint_every": "10", "student.log_every": "1",
            "student.max_failures": "1"}
    args = tuple(arg for key, value in sets.items() for arg in ("--set", f"{key}={value}"))
    run = RunProcess(REPO / "deploy/configs/own_data.yaml", "own-data", tmp_path / "runs", args)
    try:
        run.wait_for(lambda: last_step(run) >= 24, "step 24", timeout=400)
        os.kill(train_workers(run)[-1].pid, signal.SIGKILL)
    except BaseException:
        run.kill()
        raise
    assert run.finish(timeout=600) == 0, run.log()[-4000:]
    resumed = events(run, "resumed")
    assert resumed and resumed[0]["step"] % STEPS_PER_EPOCH != 0, resumed  # inside an epoch
    repeated = {step: v for step, v in losses(run).items() if len(v) > 1}
    assert repeated and max(abs(v[1] - v[0]) for v in repeated.values()) <= 1e-5, repeated

    final = phase_final(run, "kd-seed0")
    assert final["steps"] == 20 * STEPS_PER_EPOCH
    assert final["batches_planned"] == 2 * final["steps"]
    assert final["batches_lost"] == 0 and final["batches_applied_twice"] == 0 and final["batches_unplanned"] == 0

    phases = json.loads((run.run_dir / "state.json").read_text())["phases"]
    kd, baseline = phases["kd-seed0"]["test_accuracy"], phases["baseline-seed0"]["test_accuracy"]
    assert kd > baseline + 0.03, (kd, baseline)


def test_a_streamed_transfer_split_on_an_s3_compatible_server(ray_cluster, s3_server, tmp_path):
    """The students' split lives only in an object store (moto's S3-compatible server on
    loopback, started by the test): the driver checks it there chunk by chunk, Ray Data's read
    tasks stream it to the train workers, and the run finishes with its ledger whole."""
    import pyarrow.parquet as pq

    s3, options = s3_server
    data = tmp_path / "digits"
    files = own_digits(data)
    transfer = pq.read_table(data / "transfer.parquet")
    for part in range(3):
        pq.write_table(transfer.slice(part * 100, 100), f"runs-data/transfer/part-{part}.parquet", filesystem=s3)
    (data / "transfer.parquet").unlink()  # nothing of the students' split is left on the local disk
    sets = {**files, "data.source.transfer": f"s3://runs-data/transfer/*.parquet?{options}", "data.source.stream": "true",
            "run.seeds": "[0]", "student.epochs": "20"}
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    check = distillery("check", "deploy/configs/own_data.yaml", *args)
    assert check.returncode == 0 and "train (students, streamed)" in check.stdout, check.stdout + check.stderr
    run = distillery("run", "deploy/configs/own_data.yaml", *args, "--output-dir", str(tmp_path / "runs"), timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    phases = json.loads((tmp_path / "runs" / "own-data" / "state.json").read_text())["phases"]
    kd = phases["kd-seed0"]
    assert kd["steps"] == 20 * STEPS_PER_EPOCH and kd["batches_lost"] == 0 and kd["batches_applied_twice"] == 0
    assert kd["test_accuracy"] > phases["baseline-seed0"]["test_accuracy"] + 0.03
