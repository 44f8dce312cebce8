"""The offline store on a user's own files: `distillery precompute` reads the students' split as a
Ray Data stream from Parquet and keys each soft target by the row's id. The files are then
rewritten with the same rows in another order and in two files: the store is still current
(its fingerprint is the rows', whatever their order), a run reads it with no teacher served and
a batch finds its rows by id, and the KD student beats its no-KD baseline on Hinton's transfer
set without 3s."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, distillery

pytestmark = pytest.mark.integration


def test_a_store_precomputed_from_a_stream_serves_the_same_rows_in_another_order(ray_cluster, tmp_path):
    data, store = tmp_path / "digits", tmp_path / "store"
    written = subprocess.run([sys.executable, "deploy/examples/write_own_digits.py", "--out", str(data)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    sets = {"data.source.train": f"{data}/train.parquet", "data.source.test": f"{data}/test.parquet",
            "data.source.transfer": f"{data}/transfer.parquet", "run.seeds": "[0]", "student.epochs": "30",
            "distill.store_dir": str(store), "distill.top_k": "5"}
    args = lambda values: tuple(a for k, v in values.items() for a in ("--set", f"{k}={v}"))  # noqa: E731
    config = str(REPO / "deploy/configs/own_data.yaml")
    first = distillery("precompute", config, *args({**sets, "data.source.stream": "true"}), timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    manifest = json.loads(next(store.glob("*/*/manifest.json")).read_text())
    assert manifest["rows"] == 300 and manifest["key"]["top_k"] == 5
    assert set(pq.read_table(next(store.glob("*/*/*.parquet"))).column_names) >= {"row_id", "sample"}

    transfer = pq.read_table(data / "transfer.parquet")
    (data / "transfer.parquet").unlink()
    shuffled = transfer.take(np.random.default_rng(7).permutation(transfer.num_rows))
    pq.write_table(shuffled.slice(0, 120), data / "transfer-0.parquet")
    pq.write_table(shuffled.slice(120), data / "transfer-1.parquet")
    run = distillery("run", config, *args({**sets, "data.source.transfer": f"{data}/transfer-*.parquet",
                                           "distill.mode": "offline"}),
                     "--run-name", "offline-source", "--output-dir", str(tmp_path / "runs"), timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "offline store" in run.stdout, run.stdout[-3000:]
    phases = json.loads((tmp_path / "runs" / "offline-source" / "state.json").read_text())["phases"]
    kd, baseline = phases["kd-seed0"]["test_accuracy"], phases["baseline-seed0"]["test_accuracy"]
    assert kd > baseline + 0.03, (kd, baseline)
