"""Offline distillation: `distillery precompute` with Ray Data, then a run with no teacher running.
(Reusing a current store is the `find_store` path of tests/unit/test_store.py.)"""

from __future__ import annotations

import json

import pytest

from cluster.config import DataConfig
from students.data import load_dataset
from tests.integration.conftest import CONFIGS, distillery

pytestmark = pytest.mark.integration


def test_precompute_then_train_offline_and_refuse_a_stale_store(ray_cluster, tmp_path):
    store = tmp_path / "store"
    config = str(CONFIGS / "tiny.yaml")
    common = ("--set", f"distill.store_dir={store}", "--set", "distill.top_k=5")
    first = distillery("precompute", config, *common, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    manifests = sorted(store.glob("*/*/manifest.json"))
    assert [m.parent.name.split("-")[0] for m in manifests] == ["cnn", "mlp"]
    manifest = json.loads(manifests[1].read_text())
    assert manifest["rows"] == len(load_dataset(DataConfig()).train.y) and manifest["key"]["top_k"] == 5 and manifest["key"]["temperature"] == 4.0

    stale = distillery("run", config, *common, "--set", "distill.mode=offline", "--set", "distill.temperature=2",
                       "--run-name", "stale", "--output-dir", str(tmp_path))
    assert stale.returncode == 2, stale.stdout + stale.stderr
    assert "no soft-target store for teacher" in stale.stdout and "temperature 4.0 (needed 2.0)" in stale.stdout

    offline = distillery("run", config, *common, "--set", "distill.mode=offline", "--set", "run.baseline=false",
                         "--set", "student.epochs=2", "--run-name", "offline", "--output-dir", str(tmp_path),
                         timeout=400)
    assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr[-3000:]
    assert "offline store" in offline.stdout and "deployed as teacher-" not in offline.stdout
    rows = json.loads((tmp_path / "offline" / "results.json").read_text())
    assert {r["kind"] for r in rows} == {"teacher", "kd"}
    assert next(r for r in rows if r["kind"] == "kd")["score_mean"] > 0.3
    import ray.serve

    assert not [a for a in ray.serve.status().applications if a.startswith("teacher-")]
