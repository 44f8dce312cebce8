"""Continual metrics: the accuracy matrix, average accuracy and backward transfer."""

import numpy as np
import pytest

from orchestration.regimes.continual import backward_transfer, continual_rows, matrix_markdown


def phases_of(kind, seed, matrix):
    return {f"{kind}-task{k}-seed{seed}": {"parameters": 10, "train_s": 1.0,
                                          **{f"test_accuracy/task{t}": row[j] for j, t in enumerate((3, 1))},
                                          **{f"task_given_accuracy/task{t}": min(1.0, row[j] + 0.1)
                                             for j, t in enumerate((3, 1))}}
            for k, row in enumerate(matrix)}


def test_rows_aggregate_seeds_and_put_naive_fine_tuning_last():
    phases = {**phases_of("baseline", 0, [[0.9, 0.0], [0.1, 0.95]]), **phases_of("kd-lwf", 0, [[0.9, 0.0], [0.6, 0.9]]),
              **phases_of("kd-lwf", 1, [[0.8, 0.0], [0.4, 0.8]])}
    rows = continual_rows(phases, "task", [3, 1])
    assert [(r["model"], r["kind"]) for r in rows] == [("student (KD: lwf)", "kd:lwf"), ("naive fine-tuning", "baseline")]
    lwf, naive = rows
    assert lwf["seeds"] == 2 and lwf["score_mean"] == pytest.approx(np.mean([0.75, 0.6]))
    assert lwf["backward_transfer_mean"] == pytest.approx(np.mean([0.6 - 0.9, 0.4 - 0.8]))
    assert naive["score_mean"] == pytest.approx(0.525) and naive["backward_transfer_mean"] == pytest.approx(-0.8)
    assert naive["task_given_mean"] == pytest.approx(0.6)  # [0.2, 1.0] after the last task
    markdown = matrix_markdown(rows, "task", [3, 1])
    assert "| task 3 | 0.8500 | 0.0000 |" in markdown and "| task 3 | 0.9500 | 0.1000 |" in markdown


def test_a_seed_with_an_unfinished_task_is_left_out():
    phases = phases_of("kd-lwf", 0, [[0.9, 0.0], [0.6, 0.9]])
    phases.update({"kd-lwf-task0-seed1": phases["kd-lwf-task0-seed0"]})
    assert continual_rows(phases, "task", [3, 1])[0]["seeds"] == 1


def test_backward_transfer_of_a_student_that_never_forgets_is_zero():
    assert backward_transfer(np.array([[0.9, 0.1, 0.0], [0.9, 0.8, 0.0], [0.9, 0.8, 0.7]])) == pytest.approx(0.0)
