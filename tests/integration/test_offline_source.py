"""The offline store on a user's own files: `distillery precompute` scores the students' Parquet
split and keys each soft target by the row's id. The files are then rewritten with the same
rows in another order and in two files. A precompute that streams the new files through Ray
Data finds the same store folder (its fingerprint is the rows', whatever their order) and
writes the same soft targets for every row id; a streamed run trains from the first store with
no teacher served, each batch finding its rows by id, and the KD student beats its no-KD
baseline on Hinton's transfer set without 3s."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, distillery, own_digits

pytestmark = pytest.mark.integration


def _store(root) -> tuple[str, dict[str, list]]:
    """The store's folder (under its root) and its top-k classes by row id."""
    manifest = next(root.glob("*/*/manifest.json"))
    table = pa.concat_tables(pq.read_table(manifest.parent / name) for name in json.loads(manifest.read_text())["files"])
    folder = manifest.parent.relative_to(root)
    return str(folder), dict(zip(table.column("row_id").to_pylist(), table.column("topk_idx").to_pylist()))


def test_a_store_serves_the_same_rows_in_another_order_and_streamed(ray_cluster, tmp_path):
    data = tmp_path / "digits"
    sets = {**own_digits(data), "run.seeds": "[0]", "student.epochs": "30",
            "distill.store_dir": str(tmp_path / "store"), "distill.top_k": "5"}
    args = lambda values: tuple(a for k, v in values.items() for a in ("--set", f"{k}={v}"))  # noqa: E731
    config = str(REPO / "deploy/configs/own_data.yaml")
    first = distillery("precompute", config, *args(sets), timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folder, targets = _store(tmp_path / "store")
    assert len(targets) == 300 and json.loads((tmp_path / "store" / folder / "manifest.json").read_text())["rows"] == 300

    transfer = pq.read_table(data / "transfer.parquet")
    (data / "transfer.parquet").unlink()
    shuffled = transfer.take(np.random.default_rng(7).permutation(transfer.num_rows))
    pq.write_table(shuffled.slice(0, 120), data / "transfer-0.parquet")
    pq.write_table(shuffled.slice(120), data / "transfer-1.parquet")
    sets |= {"data.source.transfer": f"{data}/transfer-*.parquet", "data.source.stream": "true"}

    streamed = distillery("precompute", config, *args({**sets, "distill.store_dir": str(tmp_path / "again")}),
                          timeout=400)
    assert streamed.returncode == 0, streamed.stdout[-3000:] + streamed.stderr[-3000:]
    assert _store(tmp_path / "again") == (folder, targets)  # same fingerprint, same targets by row id

    run = distillery("run", config, *args({**sets, "distill.mode": "offline"}), "--run-name", "offline-source",
                     "--output-dir", str(tmp_path / "runs"), timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "offline store" in run.stdout, run.stdout[-3000:]
    phases = json.loads((tmp_path / "runs" / "offline-source" / "state.json").read_text())["phases"]
    kd, baseline = phases["kd-seed0"]["test_accuracy"], phases["baseline-seed0"]["test_accuracy"]
    assert kd > baseline + 0.03, (kd, baseline)
