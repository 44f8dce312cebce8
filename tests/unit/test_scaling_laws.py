"""The scaling laws' equations (Busbridge et al. 2025, Eqs. 1 and 8) and what the planner
derives from them: limits and regimes the equations imply, inverses, budgets that add up."""

import math

import numpy as np
import pytest

from planning.fit import FREE_PRIMED_POINTS, Point, fit_law
from planning.laws import PAPER_COST, DistillationLaw, ForwardCost, SupervisedLaw, load_law
from planning.plan import (Costing, Teacher, capacity_gap, compute_to_reach, compute_to_reach_training_teacher,
                           distillation_compute, optimal_split, plan)

# Hoffmann et al.'s Chinchilla fit (gamma = 1 makes Eq. 1 their form); the distillation
# coefficients are test values, not a fit.
CHINCHILLA = SupervisedLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, gamma=1.0)
LAW = DistillationLaw.tied(CHINCHILLA, c0=3.0, c1=2.0, d1=1.0, f1=1.0)


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
    teacher = Teacher(params=split.teacher_params, tokens=split.teacher_tokens)
    spent = distillation_compute(1e8, split.student_tokens, teacher, Costing("training"))
    assert spent == pytest.approx(1e21, rel=1e-9)
    assert split.teacher_loss == pytest.approx(float(CHINCHILLA.loss(split.teacher_params, split.teacher_tokens)))
    f_t, f_s = _paper_forward(split.teacher_params), _paper_forward(1e8)
    half = LAW.loss(1e8, 0.5e21 / (3 * f_s + f_t), CHINCHILLA.loss(split.teacher_params, 0.5e21 / (3 * f_t)))
    assert split.student_loss <= float(half) + 1e-12


def test_compute_to_reach_a_target_is_the_budget_that_reaches_it():
    teacher = Teacher(loss=2.3, params=1e9)
    target = float(LAW.loss(1e8, 5e10, 2.3))
    compute = compute_to_reach(LAW, 1e8, target, teacher)
    assert compute == pytest.approx(5e10 * (3 * _paper_forward(1e8) + _paper_forward(1e9)), rel=1e-6)
    free = compute_to_reach(LAW, 1e8, target, teacher, Costing("free"))
    assert free == pytest.approx(5e10 * 3 * _paper_forward(1e8), rel=1e-6)
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
    truth = DistillationLaw.tied(SupervisedLaw(E=1.2, A=50.0, B=80.0, alpha=0.3, beta=0.25, gamma=1.0),
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
    assert "distilled student loss" in out and "this teacher is beyond the best one for this student" in out
    assert "cheapest" in out and "scenario forwards" in out and f"law: {path}" in out
    published = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)  # no law file
    assert published.returncode == 0, published.stdout + published.stderr
    assert "law: paper: Busbridge et al. 2025" in published.stdout and "English web text" in published.stdout
    assert "fit a law to your own runs" in published.stdout
    missing = subprocess.run(args + ["--law", str(tmp_path / "none.json")], capture_output=True, text=True,
                             timeout=120, env=env)
    assert missing.returncode == 2 and "no scaling-law file" in missing.stdout


# --- the published law, checked against the paper's own numbers, computed here from the
# equations and Table 6 written out again (not through planning.laws) -----------------------
TABLE6 = dict(E=1.220, A=3355.0, B=18186.0, alpha=0.408, beta=0.431, gamma=0.452,
              c0=2.549, c1=522.6, f1=0.090, d1=1.315, A_=2243.0, B_=24181.0, alpha_=0.321, beta_=0.637, gamma_=0.764)


def _paper_supervised(n, d):
    t = TABLE6
    return t["E"] + (t["A"] / n ** t["alpha"] + t["B"] / d ** t["beta"]) ** t["gamma"]


def _paper_student(n, d, teacher_loss, tied=False):
    t = TABLE6
    own = _paper_supervised(n, d)
    transition = (1 + (teacher_loss / (own * t["d1"])) ** (1 / t["f1"])) ** (-t["c1"] * t["f1"])
    primed = ("A", "B", "alpha", "beta", "gamma") if tied else ("A_", "B_", "alpha_", "beta_", "gamma_")
    a, b, alpha, beta, gamma = (t[k] for k in primed)
    return teacher_loss + teacher_loss ** -t["c0"] * transition * (a / n ** alpha + b / d ** beta) ** gamma


def _paper_forward(n, n_ctx=4096, n_vocab=32768, rho=128, omega=12):
    return 2 * n * (1 + (1 / (rho * omega ** 2)) ** (1 / 3) * n_ctx / n ** (1 / 3)
                    + (rho / omega) ** (1 / 3) * n_vocab / n ** (2 / 3))


def test_the_papers_worked_example_a_1_82b_student_from_a_7_75b_chinchilla_teacher():
    """A 1.82B student on 20 tokens a parameter, from a 7.75B teacher trained on 20 tokens a
    parameter: 2.1833 with the published primed coefficients, 2.0987 had they been tied to the
    supervised law's (what the planner did before it kept them apart)."""
    n_s, n_t = 1.82e9, 7.75e9
    teacher_loss = _paper_supervised(n_t, 20 * n_t)
    assert _paper_student(n_s, 20 * n_s, teacher_loss) == pytest.approx(2.1833, abs=5e-5)
    assert _paper_student(n_s, 20 * n_s, teacher_loss, tied=True) == pytest.approx(2.0987, abs=5e-5)
    result = plan(load_law_choice("paper"), student_params=n_s, tokens=20 * n_s,
                  teacher=Teacher(params=n_t, tokens=20 * n_t))
    assert result.teacher_loss == pytest.approx(teacher_loss, rel=1e-12)
    assert result.distilled_loss == pytest.approx(_paper_student(n_s, 20 * n_s, teacher_loss), rel=1e-12)


def test_the_forward_cost_is_the_papers_f_of_n():
    assert _paper_forward(1.821e9) == pytest.approx(4.28e9, rel=2e-3)  # the reference's figure
    assert PAPER_COST.forward(1.821e9) == pytest.approx(_paper_forward(1.821e9), rel=1e-12)
    assert PAPER_COST.forward(1.821e9) / (2 * 1.821e9) == pytest.approx(1.18, abs=0.01)  # larger than 2N
    assert PAPER_COST.forward(1.98e8) / (2 * 1.98e8) == pytest.approx(1.48, abs=0.01)
    mine = ForwardCost(n_ctx=1024, n_vocab=151936, rho=64)
    assert mine.forward(5e8) == pytest.approx(_paper_forward(5e8, 1024, 151936, 64), rel=1e-12)


@pytest.mark.parametrize("scenario", ["free", "forwards", "training"])
def test_each_scenario_counts_what_it_says(scenario):
    n_s, d_s, n_t, d_t = 3e8, 6e9, 2e9, 4e10
    teacher = Teacher(params=n_t, tokens=d_t)
    expected = {"free": 3 * _paper_forward(n_s) * d_s,
                "forwards": 3 * _paper_forward(n_s) * d_s + _paper_forward(n_t) * d_s,
                "training": 3 * _paper_forward(n_s) * d_s + _paper_forward(n_t) * d_s + 3 * _paper_forward(n_t) * d_t}
    result = plan(load_law_choice("paper"), student_params=n_s, tokens=d_s, teacher=teacher, costing=Costing(scenario))
    assert result.compute == pytest.approx(expected[scenario], rel=1e-12)
    again = plan(load_law_choice("paper"), student_params=n_s, compute=expected[scenario], teacher=teacher,
                 costing=Costing(scenario))
    assert again.student_tokens == pytest.approx(d_s, rel=1e-5)  # the teacher's training dominates the budget
    assert again.supervised_loss == pytest.approx(_paper_supervised(n_s, expected[scenario] / (3 * _paper_forward(n_s))))


def test_scenarios_that_count_the_teacher_need_its_size_and_tokens():
    law = load_law_choice("paper")
    with pytest.raises(ValueError, match="needs its size .--teacher-params.; or use --scenario free"):
        plan(law, student_params=1e8, tokens=1e9, teacher=Teacher(loss=2.5), costing=Costing("forwards"))
    with pytest.raises(ValueError, match="--teacher-tokens"):
        plan(law, student_params=1e8, tokens=1e9, teacher=Teacher(loss=2.5, params=1e9), costing=Costing("training"))
    with pytest.raises(ValueError, match="does not cover the teacher's training"):
        plan(law, student_params=1e8, compute=1e10, teacher=Teacher(params=1e9, tokens=1e10),
             costing=Costing("training"))


def load_law_choice(choice, fitted_default="/nonexistent/law.json"):
    from planning.laws import resolve_law

    return resolve_law(choice, fitted_default)


def test_the_published_law_is_the_default_until_a_fitted_one_exists(tmp_path):
    law = load_law_choice(None, tmp_path / "law.json")
    assert law.primed == "published" and law.parameter_count == "non_embedding" and "web text" in law.units
    (tmp_path / "law.json").write_text(LAW.to_json())
    assert load_law_choice(None, tmp_path / "law.json") == LAW
    assert load_law_choice("paper", tmp_path / "law.json").primed == "published"


def test_a_law_file_records_every_coefficient_and_an_old_one_reads_as_tied(tmp_path):
    import json

    written = json.loads(load_law_choice("paper").to_json())
    assert {k: written[k] for k in ("A", "B", "alpha", "beta", "gamma")} == {
        "A": 2243.0, "B": 24181.0, "alpha": 0.321, "beta": 0.637, "gamma": 0.764}
    old = {k: v for k, v in json.loads(LAW.to_json()).items() if k not in ("A", "B", "alpha", "beta", "gamma",
                                                                           "parameter_count", "primed")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    read = load_law(tmp_path / "old.json")
    assert read.primed == "tied" and read.A == CHINCHILLA.A and read.gamma == CHINCHILLA.gamma
    assert read.parameter_count == "non_embedding"  # the help's and the paper's convention


def test_fit_law_fits_the_primed_coefficients_given_enough_distilled_points():
    truth = DistillationLaw(SupervisedLaw(E=1.2, A=50.0, B=80.0, alpha=0.3, beta=0.25, gamma=1.0),
                            c0=1.5, c1=1.2, d1=0.9, f1=1.0, A=30.0, B=120.0, alpha=0.35, beta=0.3, gamma=0.9)
    supervised, distilled = _points(truth, [1e5, 3e5, 1e6, 3e6], [1e6, 1e7, 1e8, 1e9], [2.0, 3.0, 4.5])
    assert len(distilled) >= FREE_PRIMED_POINTS
    fit = fit_law(supervised, distilled, held_out=lambda p: p.tokens == 1e9)
    assert fit.law.primed == "fitted" and fit.law.A != fit.law.supervised.A
    assert fit.distilled_heldout.mean_abs_pct < 1.0
    few = fit_law(supervised, distilled[:6])
    assert few.law.primed == "tied" and few.law.A == few.law.supervised.A
