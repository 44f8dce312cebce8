"""Offline distillation of classifiers: `distillery precompute` with Ray Data writes one top-k
row per sample; a run whose key differs is refused naming what differs. (Training from a store
with no teacher running is the ZeRO-3 test of test_llm.py, on a language model's per-token
store; reading rows by sample and reusing a current store are tests/unit/test_store.py.)"""

from __future__ import annotations

import json

import pytest

from students.config import DataConfig
from students.data import load_dataset
from tests.conftest import CONFIGS, distillery

pytestmark = pytest.mark.integration


def test_precompute_writes_a_store_per_teacher_and_a_stale_one_is_refused(ray_cluster, tmp_path):
    store = tmp_path / "store"
    config = str(CONFIGS / "tiny.yaml")
    common = ("--set", f"distill.store_dir={store}", "--set", "distill.top_k=5")
    first = distillery("precompute", config, *common, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    manifests = sorted(store.glob("*/*/manifest.json"))
    assert [m.parent.name.split("-")[0] for m in manifests] == ["cnn", "mlp"]
    manifest = json.loads(manifests[1].read_text())
    assert manifest["rows"] == len(load_dataset(DataConfig()).train.y) and manifest["key"]["top_k"] == 5 and manifest["key"]["temperature"] == 4.0
    assert manifest["teacher_test_score"] > 0.5  # the teacher's held-out accuracy

    stale = distillery("run", config, *common, "--set", "distill.mode=offline", "--set", "distill.temperature=2",
                       "--run-name", "stale", "--output-dir", str(tmp_path))
    assert stale.returncode == 2, stale.stdout + stale.stderr
    assert "no soft-target store for teacher" in stale.stdout and "temperature 4.0 (needed 2.0)" in stale.stdout
