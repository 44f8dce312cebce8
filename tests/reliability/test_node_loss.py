"""A two-node cluster on this machine: teachers on one node, students on the other, the
teachers' node stopped mid-run and started again (tests/reliability/faults.py)."""

from __future__ import annotations

import pytest

from harness.faults import exactly_once, teacher_node_loss

pytestmark = pytest.mark.integration


def test_students_wait_for_a_lost_teacher_node_and_go_on_when_it_is_back(ray_cluster, tmp_path):
    figures = teacher_node_loss(tmp_path, ray_cluster["gcs"])
    print("teacher node loss:", figures)
    assert figures["teacher_nodes_before"] == [True]  # every replica on the teacher node
    assert figures["student_nodes"] == [True] and figures["student_workers"] == 2  # both workers on the head
    assert figures["node_alive_after_stop"] is False
    assert figures["steps_while_teacher_away"] <= 4  # at most the prefetched batches: no step without targets
    assert figures["teacher_nodes_after"] == [True]  # Serve brought the replica back on the new node
    assert figures["faults_teachers_waited_for"] >= 1 and figures["teacher_lost_events"] == 0
    exactly_once(figures["audit"], "kd-seed0", planned=2 * figures["steps"])
