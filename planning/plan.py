"""What distillation buys, from a `DistillationLaw`: the student's predicted loss, the
compute-optimal split of a budget, whether distilling or supervised training reaches a target
loss with less compute (teacher already there, or trained for this student), and the
capacity gap (a stronger teacher that would give a worse student).

Compute (the paper's accounting, `ForwardCost`): the student's training 3 F(N_S) D_S; in the
scenario `forwards`, also the teacher's forwards on the student's tokens F(N_T) D_S; in the
scenario `training`, also the teacher's own training 3 F(N_T) D_T. In the scenario `free` the
teacher costs nothing (it exists and its targets are paid for elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from planning.laws import PAPER_COST, DistillationLaw, ForwardCost

# Teachers searched when one must be trained: from a tenth of the student to 1000 times it.
TEACHER_SIZE_RANGE = (0.1, 1000.0)
GRID = 81
SCENARIOS = {
    "free": "the teacher is given: neither its training nor its forwards are counted",
    "forwards": "the teacher is given: its forwards on the student's tokens are counted",
    "training": "the teacher's training and its forwards on the student's tokens are counted",
}


@dataclass(frozen=True)
class Costing:
    """Which scenario a plan costs (`SCENARIOS`) and the forward cost F(N) it counts with."""
    scenario: str = "forwards"
    cost: ForwardCost = PAPER_COST

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise ValueError(f"--scenario {self.scenario!r}: choose one of {', '.join(SCENARIOS)}")

    def teacher_compute(self, teacher: "Teacher", student_tokens: float) -> float:
        """What the teacher adds to a student trained on `student_tokens` tokens."""
        if self.scenario == "free":
            return 0.0
        if teacher.params is None:
            raise ValueError(f"scenario {self.scenario!r} counts the teacher's forwards, which needs its size "
                             f"(--teacher-params); or use --scenario free")
        total = float(self.cost.forwards(teacher.params, student_tokens))
        if self.scenario == "training":
            if teacher.tokens is None:
                raise ValueError("scenario 'training' counts the teacher's training, which needs the tokens it was "
                                 "trained on (--teacher-tokens)")
            total += float(self.cost.train(teacher.params, teacher.tokens))
        return total


@dataclass(frozen=True)
class Teacher:
    """A teacher known by its loss, or by its size and training tokens (its loss then comes
    from the supervised law). `params` is needed to count its forward passes."""
    loss: Optional[float] = None
    params: Optional[float] = None
    tokens: Optional[float] = None

    def resolved_loss(self, law: DistillationLaw) -> float:
        if self.loss is not None:
            return float(self.loss)
        if self.params is None or self.tokens is None:
            raise ValueError("a teacher needs its loss (--teacher-loss) or its size and training tokens "
                             "(--teacher-params and --teacher-tokens)")
        return float(law.supervised.loss(self.params, self.tokens))


@dataclass(frozen=True)
class CapacityGap:
    best_teacher_loss: float  # the teacher loss that gives this student its lowest loss
    best_student_loss: float
    teacher_too_strong: bool  # the given teacher is past the optimum: a weaker one does better
    student_loss: float
    no_optimum: bool = False  # stronger teachers help this student all the way down to the law's E


def capacity_gap(law: DistillationLaw, n_student: float, d_student: float, teacher_loss: float) -> CapacityGap:
    """The teacher loss that minimises the student's loss at (N_S, D_S); flag a teacher stronger
    than that (the U-shape of student loss against teacher loss)."""
    def student(lt: float) -> float:
        return float(law.loss(n_student, d_student, lt))

    floor = law.supervised.E
    grid = np.geomspace(floor * 1.0001, max(teacher_loss, law.supervised.loss(n_student, d_student)) * 4, 400)
    values = law.loss(n_student, d_student, grid)
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = minimize_scalar(student, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9}).x
    return CapacityGap(float(best), student(best), teacher_loss < best - 1e-9, student(teacher_loss),
                       no_optimum=bool(best <= floor * 1.001))


def distillation_compute(n_student: float, d_student: float, teacher: "Teacher", costing: Costing = Costing()) -> float:
    """The student's training on `d_student` tokens plus what the scenario counts of the teacher."""
    return float(costing.cost.train(n_student, d_student)) + costing.teacher_compute(teacher, d_student)


def student_tokens(compute: float, n_student: float, teacher: "Teacher", costing: Costing = Costing()) -> float:
    """Distillation tokens a budget buys: the scenario's fixed teacher cost first (its training),
    then per token the student's training step and (counted) the teacher's forward."""
    fixed = costing.teacher_compute(teacher, 0.0)
    per_token = distillation_compute(n_student, 1.0, teacher, costing) - fixed
    if compute <= fixed:
        raise ValueError(f"the budget {compute:.3g} FLOPs does not cover the teacher's training ({fixed:.3g} FLOPs) "
                         f"that scenario {costing.scenario!r} counts")
    return (compute - fixed) / per_token


@dataclass(frozen=True)
class TrainedTeacherSplit:
    teacher_params: float
    teacher_tokens: float
    student_tokens: float
    teacher_loss: float
    student_loss: float
    teacher_share: float  # of the budget spent training the teacher


def teacher_sizes(law: DistillationLaw, n_student: float) -> tuple[float, float]:
    """The teacher sizes searched: a tenth of the student to 1000 times it, cut to the sizes the
    law was fitted on when it records them (a law says little about models it never saw)."""
    lo, hi = n_student * TEACHER_SIZE_RANGE[0], n_student * TEACHER_SIZE_RANGE[1]
    fitted = (law.fitted_range or {}).get("params")
    if fitted and max(lo, fitted[0]) < min(hi, fitted[1]):
        lo, hi = max(lo, fitted[0]), min(hi, fitted[1])
    return lo, hi


def optimal_split(law: DistillationLaw, n_student: float, compute: float,
                  cost: ForwardCost = PAPER_COST) -> TrainedTeacherSplit:
    """The teacher to train and the tokens of both for the lowest student loss within
    `compute` (teacher training + teacher forwards + student training): a log grid over the
    teacher's size and its share of the budget."""
    sizes = np.geomspace(*teacher_sizes(law, n_student), GRID)
    shares = np.linspace(0.01, 0.99, GRID)
    nt, share = np.meshgrid(sizes, shares, indexing="ij")
    dt = share * compute / cost.train(nt, 1)
    ds = (1 - share) * compute / (cost.train(n_student, 1) + cost.forwards(nt, 1))
    lt = law.supervised.loss(nt, dt)
    ls = law.loss(n_student, ds, lt)
    i, j = np.unravel_index(int(np.nanargmin(ls)), ls.shape)
    return TrainedTeacherSplit(float(nt[i, j]), float(dt[i, j]), float(ds[i, j]), float(lt[i, j]),
                               float(ls[i, j]), float(share[i, j]))


def compute_to_reach(law: DistillationLaw, n_student: float, target: float, teacher: Teacher,
                     costing: Costing = Costing()) -> float:
    """Least compute (as `costing` counts it) for a student of `n_student` parameters distilled
    from `teacher` to reach `target`; inf when no number of tokens gets there."""
    lt = teacher.resolved_loss(law)

    def gap(log_d: float) -> float:
        return float(law.loss(n_student, np.exp(log_d), lt)) - target

    lo, hi = np.log(1e3), np.log(1e18)
    if gap(hi) > 0:
        return float("inf")
    if gap(lo) <= 0:
        return distillation_compute(n_student, float(np.exp(lo)), teacher, costing)
    return distillation_compute(n_student, float(np.exp(brentq(gap, lo, hi, xtol=1e-10))), teacher, costing)


def compute_to_reach_training_teacher(law: DistillationLaw, n_student: float, target: float,
                                      cost: ForwardCost = PAPER_COST) -> tuple[float, TrainedTeacherSplit]:
    """Least total compute (teacher trained for this student) whose optimal split reaches
    `target`, by bisection on the budget; (inf, split at the largest budget) when none does."""
    def reached(log_c: float) -> bool:
        return optimal_split(law, n_student, float(np.exp(log_c)), cost).student_loss <= target

    lo, hi = np.log(1e6), np.log(1e32)
    if not reached(hi):
        return float("inf"), optimal_split(law, n_student, float(np.exp(hi)), cost)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reached(mid) else (mid, hi)
    return float(np.exp(hi)), optimal_split(law, n_student, float(np.exp(hi)), cost)


@dataclass(frozen=True)
class Plan:
    student_params: float
    student_tokens: float
    compute: float
    teacher_loss: float
    supervised_loss: float  # the same student trained on labels with the same compute
    distilled_loss: float
    gap: CapacityGap
    trained_teacher: TrainedTeacherSplit  # the best student when the teacher is trained within the budget
    costing: Costing = Costing()
    target: Optional[float] = None
    compute_supervised: Optional[float] = None
    compute_existing_teacher: Optional[float] = None
    compute_training_teacher: Optional[float] = None

    @property
    def distillation_helps(self) -> bool:
        return self.distilled_loss < self.supervised_loss


def plan(law: DistillationLaw, *, student_params: float, teacher: Teacher, tokens: Optional[float] = None,
         compute: Optional[float] = None, target: Optional[float] = None, costing: Costing = Costing()) -> Plan:
    """Everything `distillery plan` prints. Give the student's token budget or a compute
    budget (one of them), costed as `costing` says; with `target`, also the compute each route
    needs to reach it."""
    if (tokens is None) == (compute is None):
        raise ValueError("give the student's budget as tokens (--tokens) or as compute in FLOPs (--compute), "
                         "one of the two")
    if student_params <= 0 or (tokens is not None and tokens <= 0) or (compute is not None and compute <= 0):
        raise ValueError("student parameters, tokens and compute must be positive")
    lt = teacher.resolved_loss(law)
    if lt <= law.supervised.E:
        raise ValueError(f"teacher loss {lt:.4f} is below the law's irreducible loss E = {law.supervised.E:.4f}; "
                         f"no model reaches it (check the units: cross-entropy in nats per token)")
    cost = costing.cost
    if compute is None:
        compute = distillation_compute(student_params, tokens, teacher, costing)
    else:
        tokens = student_tokens(compute, student_params, teacher, costing)
    supervised_tokens = compute / float(cost.train(student_params, 1))
    result = dict(student_params=student_params, student_tokens=float(tokens), compute=float(compute),
                  teacher_loss=lt, supervised_loss=float(law.supervised.loss(student_params, supervised_tokens)),
                  distilled_loss=float(law.loss(student_params, tokens, lt)),
                  gap=capacity_gap(law, student_params, tokens, lt),
                  trained_teacher=optimal_split(law, student_params, compute, cost), costing=costing)
    if target is not None:
        supervised_needed = law.supervised.tokens_for(student_params, target)
        result.update(target=target, compute_supervised=float(cost.train(student_params, supervised_needed)),
                      compute_existing_teacher=compute_to_reach(law, student_params, target, teacher, costing),
                      compute_training_teacher=compute_to_reach_training_teacher(law, student_params, target,
                                                                                 cost)[0])
    return Plan(**result)
