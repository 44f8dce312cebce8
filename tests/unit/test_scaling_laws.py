"""The scaling laws' equations (Busbridge et al. 2025, Eqs. 1 and 8) and what the planner
derives from them: limits and regimes the equations imply, inverses, budgets that add up."""

import math

import numpy as np
import pytest

from planning.fit import Point, fit_law
from planning.laws import DistillationLaw, SupervisedLaw, load_law
from planning.plan import (Teacher, capacity_gap, compute_to_reach, compute_to_reach_training_teacher,
                           distillation_compute, optimal_split, plan)

# Hoffmann et al.'s Chinchilla fit (gamma = 1 makes Eq. 1 their form); the distillation
# coefficients are test values, not a fit.
CHINCHILLA = SupervisedLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, gamma=1.0)
LAW = DistillationLaw(CHINCHILLA, c0=3.0, c1=2.0, d1=1.0, f1=1.0)


def test_supervised_law_is_chinchillas_form_and_inverts():
    n, d = 1e9, 2e10
    assert CHINCHILLA.loss(n, d) == pytest.approx(1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28)
    target = float(CHINCHILLA.loss(n, d))
    assert CHINCHILLA.tokens_for(n, target) == pytest.approx(d, rel=1e-9)
    assert CHINCHILLA.tokens_for(n, CHINCHILLA.floor(n) - 1e-6) == math.inf


def test_the_student_never_beats_its_teacher_and_reaches_it_with_unlimited_capacity():
    lt = np.linspace(1.8, 4.0, 12)
    students = LAW.loss(1e8, 1e10, lt)
    assert np.all(students > lt)
    assert LAW.loss(1e30, 1e30, 2.5) == pytest.approx(2.5, abs=1e-6)


def test_far_from_the_students_reach_the_law_is_a_power_law_in_teacher_loss():
    """For L_T >> d1 L~_S the transition factor tends to (L_T / (d1 L~_S))^-c1."""
    n, d = 1e7, 1e8
    supervised = float(CHINCHILLA.loss(n, d))
    reach = (CHINCHILLA.A / n ** CHINCHILLA.alpha + CHINCHILLA.B / d ** CHINCHILLA.beta) ** CHINCHILLA.gamma
    lt = 1e4 * supervised
    asymptote = lt + lt ** -LAW.c0 * (lt / (LAW.d1 * supervised)) ** -LAW.c1 * reach
    assert LAW.loss(n, d, lt) == pytest.approx(asymptote, rel=1e-3)


def test_the_capacity_gap_a_stronger_teacher_past_the_optimum_gives_a_worse_student():
    n, d = 1e6, 2e9  # a small student: its reach term is large, so the U is pronounced
    gap = capacity_gap(LAW, n, d, teacher_loss=2.6)
    assert CHINCHILLA.E < gap.best_teacher_loss < 2.6 and not gap.teacher_too_strong
    lts = np.linspace(CHINCHILLA.E + 1e-4, 4.0, 20000)
    assert gap.best_student_loss == pytest.approx(float(LAW.loss(n, d, lts).min()), abs=1e-5)
    strong = capacity_gap(LAW, n, d, teacher_loss=(CHINCHILLA.E + gap.best_teacher_loss) / 2)
    assert strong.teacher_too_strong and strong.student_loss > gap.best_student_loss


def test_compute_split_spends_the_budget_and_beats_every_other_split_on_the_grid():
    split = optimal_split(LAW, 1e8, 1e21)
    spent = distillation_compute(1e8, split.student_tokens, split.teacher_params, split.teacher_tokens)
    assert spent == pytest.approx(1e21, rel=1e-9)
    assert split.teacher_loss == pytest.approx(float(CHINCHILLA.loss(split.teacher_params, split.teacher_tokens)))
    half = LAW.loss(1e8, 0.5e21 / (6e8 + 2 * split.teacher_params),
                    CHINCHILLA.loss(split.teacher_params, 0.5e21 / (6 * split.teacher_params)))
    assert split.student_loss <= float(half) + 1e-12


def test_compute_to_reach_a_target_is_the_budget_that_reaches_it():
    teacher = Teacher(loss=2.3, params=1e9)
    target = float(LAW.loss(1e8, 5e10, 2.3))
    compute = compute_to_reach(LAW, 1e8, target, teacher)
    assert compute == pytest.approx(distillation_compute(1e8, 5e10, 1e9), rel=1e-6)
    assert compute_to_reach(LAW, 1e8, 2.29, teacher) == math.inf  # below the teacher: never
    total, split = compute_to_reach_training_teacher(LAW, 1e8, target)
    assert split.student_loss <= target and math.isfinite(total)


def test_plan_takes_tokens_or_compute_and_says_which_route_is_cheaper():
    teacher = Teacher(params=1e9, tokens=2e10)
    by_tokens = plan(LAW, student_params=1e8, teacher=teacher, tokens=1e10)
    by_compute = plan(LAW, student_params=1e8, teacher=teacher, compute=by_tokens.compute)
    assert by_compute.student_tokens == pytest.approx(1e10) and by_compute.distilled_loss == pytest.approx(
        by_tokens.distilled_loss)
    assert by_tokens.teacher_loss == pytest.approx(float(CHINCHILLA.loss(1e9, 2e10)))
    targeted = plan(LAW, student_params=1e8, teacher=teacher, tokens=1e10, target=by_tokens.distilled_loss)
    assert targeted.compute_existing_teacher == pytest.approx(by_tokens.compute, rel=1e-6)
    assert targeted.compute_supervised > 0 and targeted.compute_training_teacher > targeted.compute_existing_teacher
    with pytest.raises(ValueError, match="one of the two"):
        plan(LAW, student_params=1e8, teacher=teacher)
    with pytest.raises(ValueError, match="below the law's irreducible loss"):
        plan(LAW, student_params=1e8, teacher=Teacher(loss=1.0), tokens=1e9)
    with pytest.raises(ValueError, match="--teacher-loss"):
        plan(LAW, student_params=1e8, teacher=Teacher(params=1e9), tokens=1e9)


def test_a_law_file_round_trips_and_a_bad_one_is_named(tmp_path):
    path = tmp_path / "law.json"
    path.write_text(LAW.to_json())
    assert load_law(path) == LAW and load_law(path).source == str(path)
    (tmp_path / "bad.json").write_text('{"c0": 1}')
    with pytest.raises(ValueError, match="is not a scaling-law file"):
        load_law(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no scaling-law file"):
        load_law(tmp_path / "missing.json")


def _points(law, sizes, budgets, teacher_losses=()):
    supervised = [Point(n, d, float(law.supervised.loss(n, d)), run=f"n{n:g}-d{d:g}") for n in sizes for d in budgets]
    distilled = [Point(n, d, float(law.loss(n, d, lt)), teacher_loss=lt, run=f"n{n:g}-d{d:g}")
                 for n in sizes for d in budgets for lt in teacher_losses]
    return supervised, distilled


def test_a_fit_to_points_of_a_known_law_predicts_held_out_points():
    truth = DistillationLaw(SupervisedLaw(E=1.2, A=50.0, B=80.0, alpha=0.3, beta=0.25, gamma=1.0),
                            c0=1.5, c1=1.2, d1=0.9, f1=1.0)
    supervised, distilled = _points(truth, [1e5, 3e5, 1e6, 3e6], [1e6, 1e7, 1e8, 1e9], [2.0, 3.0, 4.5])
    fit = fit_law(supervised, distilled, held_out=lambda p: p.tokens == 1e9)  # extrapolate in tokens
    assert fit.gamma_fitted and fit.supervised_heldout.points == 4 and fit.distilled_heldout.points == 12
    assert fit.supervised_heldout.mean_abs_pct < 1.0 and fit.distilled_heldout.mean_abs_pct < 1.0
    assert fit.distilled_train.rmse < 0.02
    assert fit.law.fitted_range["tokens"] == [1e6, 1e8]  # the held-out budget is outside what was fitted
    assert fit.law.outside_fitted_range(tokens=1e9, params=1e6) == ["tokens 1e+09 outside the fitted 1e+06..1e+08"]
    split = optimal_split(fit.law, 3e5, 1e15)  # a teacher to train: searched among the sizes fitted on
    assert 1e5 <= split.teacher_params <= 3e6


def test_too_few_points_to_fit_are_refused_by_name():
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_law([Point(1e5, 1e6, 3.0)], [])


def test_distillery_plan_prints_the_plan_and_names_a_missing_law(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "240"}  # one table row per line

    path = tmp_path / "law.json"
    path.write_text(LAW.to_json())
    args = [sys.executable, "-m", "orchestration", "plan", "--student-params", "1e6", "--tokens", "2e9",
            "--teacher-loss", "1.75", "--teacher-params", "1e9", "--target-loss", "3.0"]
    shown = subprocess.run(args + ["--law", str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert "distilled student loss" in out and "this teacher is too strong for the student" in out
    assert "cheapest" in out
    missing = subprocess.run(args + ["--law", str(tmp_path / "none.json")], capture_output=True, text=True,
                             timeout=120, env=env)
    assert missing.returncode == 2 and "no scaling-law file" in missing.stdout
