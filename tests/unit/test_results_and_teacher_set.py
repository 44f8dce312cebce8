"""The results table's aggregation over seeds, and teacher-set versioning."""

import statistics

import pytest

from orchestration.results import kd_gains, markdown, summarize
from teachers.teacher_set import TeacherEntry, TeacherSet


def phase(acc, params=100, seconds=2.0):
    return {"test_accuracy": acc, "parameters": params, "train_s": seconds}


def test_summary_aggregates_seeds_with_mean_and_spread():
    teachers = {"cnn": {"score": 0.98, "parameters": 1000, "train_seconds": 5.0, "cached": True}}
    phases = {"kd-seed0": phase(0.93), "kd-seed1": phase(0.95), "baseline-seed0": phase(0.90),
              "baseline-seed1": phase(0.88)}
    rows = {r["kind"]: r for r in summarize(teachers, phases)}
    assert rows["kd"]["score_mean"] == pytest.approx(0.94)
    assert rows["kd"]["score_std"] == pytest.approx(statistics.stdev([0.93, 0.95]))
    assert rows["baseline"]["seeds"] == 2 and rows["teacher"]["note"] == "cached"
    assert kd_gains(list(rows.values())) == {"student (KD)": pytest.approx(0.05)}
    text = markdown(list(rows.values()), "t")
    assert "0.9400 ± 0.0141" in text and "+5.00 accuracy points" in text


def test_several_methods_get_a_row_and_a_gain_each():
    phases = {"kd-dkd-seed0": phase(0.93), "baseline-seed0": phase(0.90), "kd-fitnet-seed0": phase(0.91)}
    rows = summarize({}, phases)
    assert [r["model"] for r in rows] == ["student (KD: dkd)", "student (KD: fitnet)", "student (no KD)"]
    gains = kd_gains(rows)
    assert gains["student (KD: dkd)"] == pytest.approx(0.03) and gains["student (KD: fitnet)"] == pytest.approx(0.01)
    assert "student (KD: dkd) over the no-KD baseline: +3.00 accuracy points." in markdown(rows, "t")


def test_teacher_set_changes_bump_the_version_and_keep_snapshots_immutable():
    entry = TeacherEntry("a", 1.0, "classes:10", 10, "v1")
    first = TeacherSet().with_teacher(entry)
    second = first.with_teacher(TeacherEntry("b", 0.5, "classes:10", 10, "v2"))
    third = second.without_teacher("a")
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert set(first.teachers) == {"a"} and third.weights() == {"b": 0.5}
    assert entry.app_name == "teacher-a"
