"""Offline distillation of classifiers from a store on object storage (moto's S3 server on
loopback): `distillery precompute` with Ray Data writes one top-k row per sample straight to
S3, a run in offline mode trains from it with no teacher running, and a run whose key differs
is refused naming what differs. (A language model's per-token store on a local folder is the
ZeRO-3 test of test_llm.py; reading rows by sample and reusing a current store are
tests/unit/test_store.py.)"""

from __future__ import annotations

import json

import pytest

from ingest.config import DataConfig
from ingest.loading import load_dataset
from tests.conftest import CONFIGS, distillery

pytestmark = pytest.mark.integration


def test_precompute_to_s3_then_an_offline_run_from_it_and_a_stale_one_refused(ray_cluster, s3_server, tmp_path):
    s3, options = s3_server
    config = str(CONFIGS / "tiny.yaml")
    common = ("--set", f"distill.store_dir=s3://runs-data/store?{options}", "--set", "distill.top_k=5")
    first = distillery("precompute", config, *common, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    manifests = sorted(info.path for info in s3.get_file_info(_selector("runs-data/store"))
                       if info.path.endswith("/manifest.json"))
    assert [m.split("/")[-2].split("-")[0] for m in manifests] == ["cnn", "mlp"]
    with s3.open_input_stream(manifests[1]) as stream:
        manifest = json.loads(stream.read())
    assert manifest["rows"] == len(load_dataset(DataConfig()).train.y) and manifest["key"]["top_k"] == 5
    assert manifest["key"]["temperature"] == 4.0 and all(f.startswith("attempt-") for f in manifest["files"])
    assert manifest["teacher_test_score"] > 0.5  # the teacher's held-out accuracy

    offline = distillery("run", config, *common, "--set", "distill.mode=offline", "--set", "student.epochs=8",
                         "--run-name", "from-s3", "--output-dir", str(tmp_path), timeout=400)
    assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr[-3000:]
    rows = {r["kind"]: r for r in json.loads((tmp_path / "from-s3" / "results.json").read_text())}
    print({kind: row["score_mean"] for kind, row in rows.items()})
    assert rows["kd"]["score_mean"] > rows["baseline"]["score_mean"]  # the S3 store's targets help, no teacher running

    stale = distillery("run", config, *common, "--set", "distill.mode=offline", "--set", "distill.temperature=2",
                       "--run-name", "stale", "--output-dir", str(tmp_path))
    assert stale.returncode == 2, stale.stdout + stale.stderr
    assert "no soft-target store for teacher" in stale.stdout and "temperature 4.0 (needed 2.0)" in stale.stdout


def _selector(path: str):
    from pyarrow import fs

    return fs.FileSelector(path, recursive=True)
