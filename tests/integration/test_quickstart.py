"""The quickstart as a new user runs it, in a real terminal (a tmux pane): the screen holds the
run's own lines (phases, teachers, progress, results, the KD verdict, the audit's) and none of
Ray's, Serve's, Train's or DeepSpeed's output, which is in the run's `logs/run.log`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import RAY_OUTPUT, distillery_in_terminal

pytestmark = pytest.mark.integration


def test_the_quickstart_in_a_terminal_shows_the_runs_own_view(ray_cluster, tmp_path):
    code, screen = distillery_in_terminal("run", "deploy/configs/quickstart.yaml", "--output-dir", str(tmp_path),
                                          timeout=900)
    assert code == 0, screen[-4000:]
    for foreign in RAY_OUTPUT:
        assert foreign not in screen, f"{foreign!r} reached the screen:\n{screen}"
    lines = [line for line in screen.splitlines() if line.strip()]
    assert len(lines) < 60, f"{len(lines)} lines:\n{screen}"  # the issue counted 121, most of them Ray's
    phases = [f"{kind}-seed{seed}" for seed in range(3) for kind in ("kd", "baseline")]
    for shown in ("logs of Ray, Serve, Train and DeepSpeed:", *(f"{p}: started" for p in phases),
                  *(f"{p}: finished at step 160" for p in phases), "Distillery run quickstart: digits",
                  "KD gain over the no-KD baseline", "audit: every planned batch applied exactly once"):
        assert shown in screen, f"{shown!r} is not on the screen:\n{screen}"
    log = (tmp_path / "quickstart" / "logs" / "run.log").read_text(errors="replace")
    assert "RayTrainWorker" in log  # what the screen was spared
    final = json.loads((tmp_path / "quickstart" / "state.json").read_text())["phases"]
    for seed in range(3):  # on every fixed seed, the distilled student beats its no-KD baseline
        assert final[f"kd-seed{seed}"]["test_accuracy"] > final[f"baseline-seed{seed}"]["test_accuracy"], final
