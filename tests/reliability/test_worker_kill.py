"""A killed train worker, a killed driver and a checkpoint cut short, in one run with gradients
accumulated over 4 micro-batches: checkpoints are taken only where a window closes (the one
the rerun resumes from fell due inside a window), the run resumes, the steps trained again give
the same losses, and no batch is lost or applied twice."""

from __future__ import annotations

import pytest

from harness.faults import exactly_once, worker_kill

pytestmark = pytest.mark.integration


def test_a_killed_worker_and_driver_resume_with_the_same_losses(ray_cluster, tmp_path):
    figures = worker_kill(tmp_path)
    print("worker kill:", figures)
    assert figures["worker_restart_resumed_from_step"] % 4 == 0
    assert figures["driver_rerun_resumed_from_step"] % 4 == 0
    assert figures["worker_restart_steps_replayed"] >= 1
    assert figures["driver_rerun_used_an_older_checkpoint"]
    assert figures["driver_rerun_resumed_from_step"] < figures["latest_checkpoint_step"]
    assert figures["steps_compared"] >= figures["worker_restart_steps_replayed"]
    assert figures["max_loss_difference"] <= 1e-5
    audited = exactly_once(figures["audit"], "kd-seed0", planned=2 * figures["steps"])
    assert audited["rolled_back"] >= 2 * figures["worker_restart_steps_replayed"]  # the audit saw both resumes
