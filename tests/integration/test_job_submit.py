"""`ray job submit --working-dir . -- python -m orchestration run ...` on a `ray start` cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration


def test_job_submit_runs_the_same_job(ray_cluster, tmp_path):
    import os

    runtime_env = {"env_vars": {"DISTILLERY_CACHE_DIR": os.environ["DISTILLERY_CACHE_DIR"]}}
    result = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", ray_cluster["dashboard"],
         "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "orchestration", "run", "tests/integration/configs/tiny.yaml",
         "--run-name", "submitted", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout + result.stderr
    assert "KD gain over the no-KD baseline" in result.stdout
    rows = json.loads((tmp_path / "submitted" / "results.json").read_text())
    assert {r["kind"] for r in rows} == {"teacher", "kd", "baseline"}
