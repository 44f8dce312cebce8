"""A teacher set changed while the run trains (a teacher added, another reweighted) outlives
its driver: the driver is killed, the same command resumes the run, `teacher list` shows the
same teachers, weights and version, and the resumed workers distil from that set."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import CONFIGS as TEACHER_CONFIGS, RunProcess, distillery
from harness.faults import CONFIGS, last_step, rank0_steps

pytestmark = pytest.mark.integration
SETTINGS = ("--set", "student.epochs=1000", "--set", "student.max_failures=0")  # ended by `distillery stop`


def _listed(run: str) -> dict:
    listed = distillery("teacher", "list", "--run", run, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    out = json.loads(listed.stdout)
    return {"version": out["teacher_set_version"],
            "teachers": {name: t["weight"] for name, t in out["teachers"].items()}}


def test_a_restarted_driver_has_the_teacher_set_its_run_had(ray_cluster, tmp_path):
    run = RunProcess(CONFIGS / "worker_kill.yaml", "set-resume", tmp_path, SETTINGS)
    try:
        run.wait_for(lambda: last_step(run) >= 2, "training", timeout=300)
        added = distillery("teacher", "add", "--run", "set-resume", str(TEACHER_CONFIGS / "teachers" / "quick_mlp.yaml"))
        assert added.returncode == 0, added.stdout + added.stderr
        weighted = distillery("teacher", "weight", "--run", "set-resume", "mlp", "3")
        assert weighted.returncode == 0, weighted.stdout + weighted.stderr
        before = _listed("set-resume")
        assert before["teachers"] == {"mlp": 3.0, "quick-mlp": 0.5}
        run.wait_for(lambda: any(r.get("teachers") == ["mlp", "quick-mlp"] and r.get("teacher/mlp/weight") == 3.0
                                 for r in rank0_steps(run)), "the workers using the changed set", timeout=120)
    finally:
        if run.proc.poll() is None:
            run.kill()

    rerun = RunProcess(CONFIGS / "worker_kill.yaml", "set-resume", tmp_path, SETTINGS)
    try:
        # the killed run's workers may still log a step after the kill: records count from the restore on
        rerun.wait_for(lambda: "restored the set the run had (mlp, quick-mlp)" in rerun.log(),
                       "the resumed run's teacher set", timeout=300)
        restored_at = time.time()
        after = rerun.wait_for(lambda: [r for r in rank0_steps(rerun) if r["time"] > restored_at],
                               "a training record of the resumed run", timeout=300)
        assert _listed("set-resume") == before
        assert after[0]["teachers"] == ["mlp", "quick-mlp"] and after[0]["teacher/mlp/weight"] == 3.0
        assert after[0]["teacher/quick-mlp/weight"] == 0.5
        stopped = distillery("stop", "--run", "set-resume")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert rerun.finish(timeout=300) == 0, rerun.log()[-3000:]
    finally:
        if rerun.proc.poll() is None:
            rerun.kill()
