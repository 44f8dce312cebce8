"""`ray job submit --working-dir . -- python -m orchestration run ...` on a `ray start` cluster.

The submitted job trains with every family of the KD method library through served teachers
(configs/methods.yaml), so this one run also checks the method library end to end, and the
learned-gate (with adversarial distillation) and routed multi-teacher weightings, and the
generator of synthetic inputs labelled by the served teachers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_job_submit_runs_the_same_job(ray_cluster, tmp_path):
    import os

    runtime_env = {"env_vars": {"DISTILLERY_CACHE_DIR": os.environ["DISTILLERY_CACHE_DIR"]}}
    result = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", ray_cluster["dashboard"],
         "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "orchestration", "run", "tests/integration/configs/methods.yaml",
         "--run-name", "submitted", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout + result.stderr
    assert "student (KD: born_again) over the no-KD baseline" in result.stdout
    rows = json.loads((tmp_path / "submitted" / "results.json").read_text())
    report = (tmp_path / "submitted" / "report.md").read_text()  # the job's report, with its plots
    for plot in ("loss", "eval", "teacher_weights", "teacher_latency"):
        assert f"(report/{plot}.png)" in report and (tmp_path / "submitted" / "report" / f"{plot}.png").stat().st_size
    assert {r["kind"] for r in rows} == {"teacher", "ensemble", "kd:families", "kd:born_again", "kd:gating", "kd:route",
                                         "baseline"}
    records = [json.loads(line) for line in (tmp_path / "submitted" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r.get("phase") == "kd-families-seed0" and "loss/fitnet" in r]
    assert kd, "no KD metric records with the feature terms"
    for family in ("kd", "dkd", "fitnet", "attention_transfer", "rkd_distance", "similarity_preserving", "byot"):
        assert all(np.isfinite(r[f"loss/{family}"]) for r in kd), family
    assert kd[-1]["loss/fitnet"] < kd[0]["loss/fitnet"]
    assert {"mlp", "cnn"} <= set(kd[-1]["teachers"])
    # born-again: the snapshot of the families student is the only teacher, served while the phase runs
    snapshot = "snapshot-kd-families-seed0"
    born = [r for r in records if r.get("phase") == "kd-born_again-seed0" and "loss/kd" in r]
    assert born and all(r["teachers"] == [snapshot] for r in born)
    assert (tmp_path / "submitted" / "snapshots" / "kd-families-seed0.safetensors").is_file()
    events = [(r["event"], r.get("teacher")) for r in records if "event" in r]
    assert events.index(("teacher_added", snapshot)) < events.index(("teacher_removed", snapshot))
    # the gate trains with the student; routed samples go to one teacher each (tasks 0-1 hold ~40%)
    gated = [r for r in records if r.get("phase") == "kd-gating-seed0" and "loss/gate" in r]
    assert gated and all(np.isfinite(r[f"loss/{k}"]) for r in gated for k in ("gate", "adversarial", "discriminator"))
    assert all(abs(r["teacher/mlp/effective_weight"] + r["teacher/cnn/effective_weight"] - 1) < 1e-5 for r in gated)
    routed = [r for r in records if r.get("phase") == "kd-route-seed0" and "teacher/mlp/effective_weight" in r]
    share = np.mean([r["teacher/mlp/effective_weight"] for r in routed])
    assert routed and 0.25 < share < 0.55, share
    generated = [r for r in records if r.get("phase") == "kd-route-seed0" and r.get("rank") == 0 and "loss/synthetic_kd" in r]
    assert generated and all(np.isfinite(r["loss/synthetic_kd"]) and r["loss/generator_disagreement"] >= 0
                             for r in generated)
    baseline = [r for r in records if r.get("phase") == "baseline-seed0" and "loss/ce" in r]
    assert baseline and not any("loss/kd" in r for r in baseline)
