"""Fit the scaling laws' coefficients to measured points, and say how well they predict.

As for Chinchilla's third approach: minimise the Huber loss of log(predicted) - log(measured)
over the coefficients with L-BFGS from a grid of starts, keeping the best. The supervised law
is fitted first (students trained on labels, and teachers: they are supervised models too);
the distillation law then fits c0, c1, d1, f1 with its primed coefficients A' .. gamma' set to
the supervised law's, and then, with at least `FREE_PRIMED_POINTS` distilled points, all nine
together from two starts: those values, and the paper's published primed coefficients. With
fewer points the primed coefficients stay tied to the supervised law's, and the law says so.
With fewer than `FREE_GAMMA_POINTS` supervised points gamma stays 1 (Chinchilla's form): six
coefficients from a handful of runs would fit noise.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
from scipy.optimize import minimize

from planning.laws import PAPER_LAW, DistillationLaw, SupervisedLaw

HUBER_DELTA = 1e-3
FREE_GAMMA_POINTS = 12
FREE_PRIMED_POINTS = 20


@dataclass(frozen=True)
class Point:
    """One measured model: its parameters, training tokens and held-out cross-entropy (nats);
    `teacher_loss` for a distilled student."""
    params: float
    tokens: float
    loss: float
    teacher_loss: Optional[float] = None
    run: str = ""
    phase: str = ""
    teacher: str = ""


@dataclass(frozen=True)
class FitError:
    points: int
    rmse: float  # of the loss, nats
    mean_abs_pct: float  # of the loss, percent
    max_abs_pct: float

    @classmethod
    def of(cls, predicted: np.ndarray, measured: np.ndarray) -> Optional["FitError"]:
        if len(measured) == 0:
            return None
        pct = np.abs(predicted - measured) / measured * 100
        return cls(len(measured), float(np.sqrt(np.mean((predicted - measured) ** 2))), float(pct.mean()),
                   float(pct.max()))


@dataclass(frozen=True)
class LawFit:
    law: DistillationLaw
    supervised_train: FitError
    supervised_heldout: Optional[FitError]
    distilled_train: Optional[FitError]
    distilled_heldout: Optional[FitError]
    gamma_fitted: bool


def _huber(residual: np.ndarray) -> float:
    a = np.abs(residual)
    return float(np.sum(np.where(a <= HUBER_DELTA, 0.5 * a ** 2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))))


def _best(objective: Callable[[np.ndarray], float], starts: Sequence[Sequence[float]]) -> np.ndarray:
    best, best_value = None, math.inf
    for start in starts:
        with warnings.catch_warnings():  # finite differences across an invalid region: that start loses
            warnings.simplefilter("ignore", RuntimeWarning)
            result = minimize(objective, np.asarray(start, dtype=float), method="L-BFGS-B")
        if np.isfinite(result.fun) and result.fun < best_value:
            best, best_value = result.x, result.fun
    if best is None:
        raise ValueError("the scaling-law fit found no finite solution: check that the points have positive "
                         "parameters, tokens and losses")
    return best


def _supervised_from(theta: np.ndarray, gamma_fitted: bool) -> SupervisedLaw:
    log_e, log_a, log_b, alpha, beta = theta[:5]
    return SupervisedLaw(E=float(np.exp(log_e)), A=float(np.exp(log_a)), B=float(np.exp(log_b)), alpha=float(alpha),
                         beta=float(beta), gamma=float(theta[5]) if gamma_fitted else 1.0)


def fit_supervised(points: Sequence[Point]) -> tuple[SupervisedLaw, bool]:
    if len(points) < 3:
        raise ValueError(f"fitting the supervised law needs at least 3 points (students trained without KD, or "
                         f"teachers), got {len(points)}; run `distillery sweep` or more runs with run.baseline: true")
    n, d, loss = (np.array([getattr(p, k) for p in points], dtype=float) for k in ("params", "tokens", "loss"))
    gamma_fitted = len(points) >= FREE_GAMMA_POINTS
    floor = float(np.log(max(loss.min() * 0.5, 1e-3)))

    def objective(theta: np.ndarray) -> float:
        law = _supervised_from(theta, gamma_fitted)
        if law.gamma <= 0 or law.alpha <= 0 or law.beta <= 0:
            return math.inf
        with np.errstate(all="ignore"):
            return _huber(np.log(law.loss(n, d)) - np.log(loss))

    grid = itertools.product([floor, float(np.log(loss.min() * 0.9))], [0.0, 4.0, 8.0], [0.0, 4.0, 8.0],
                             [0.2, 0.5], [0.2, 0.5])
    starts = [[*s, 1.0] if gamma_fitted else list(s) for s in grid]
    return _supervised_from(_best(objective, starts), gamma_fitted), gamma_fitted


def fit_distillation(points: Sequence[Point], supervised: SupervisedLaw) -> DistillationLaw:
    if len(points) < 2:
        raise ValueError(f"fitting the distillation law needs at least 2 distilled students, got {len(points)}")
    n, d, lt, loss = (np.array([getattr(p, k) for p in points], dtype=float)
                      for k in ("params", "tokens", "teacher_loss", "loss"))

    def law_of(theta: np.ndarray) -> DistillationLaw:
        c0, c1, log_d1, log_f1 = theta[:4]
        coefficients = dict(c0=float(c0), c1=float(c1), d1=float(np.exp(log_d1)), f1=float(np.exp(log_f1)))
        if len(theta) == 4:
            return DistillationLaw.tied(supervised, **coefficients)
        log_a, log_b, alpha, beta, gamma = theta[4:]
        return DistillationLaw(supervised, **coefficients, A=float(np.exp(log_a)), B=float(np.exp(log_b)),
                               alpha=float(alpha), beta=float(beta), gamma=float(gamma), primed="fitted")

    def objective(theta: np.ndarray) -> float:
        law = law_of(theta)
        if min(law.alpha, law.beta, law.gamma) <= 0:
            return math.inf
        with np.errstate(all="ignore"):
            return _huber(np.log(law.loss(n, d, lt)) - np.log(loss))

    starts = list(itertools.product([0.0, 1.0, 3.0], [0.5, 2.0], [-1.0, 0.0, 1.0], [0.0]))
    tied = _best(objective, starts)
    if len(points) < FREE_PRIMED_POINTS:
        return law_of(tied)

    def primed_start(law: Any) -> list[float]:
        return [np.log(law.A), np.log(law.B), law.alpha, law.beta, law.gamma]

    return law_of(_best(objective, [[*tied, *primed_start(supervised)], [*tied, *primed_start(PAPER_LAW)]]))


def fit_law(supervised: Sequence[Point], distilled: Sequence[Point],
            held_out: Callable[[Point], bool] = lambda p: False, parameter_count: str = "non_embedding") -> LawFit:
    """Fit on the points not `held_out`; report the error on both sets. `parameter_count` says
    how the points count parameters, and is recorded with the law."""
    sup_train = [p for p in supervised if not held_out(p)]
    sup_test = [p for p in supervised if held_out(p)]
    dist_train = [p for p in distilled if not held_out(p)]
    dist_test = [p for p in distilled if held_out(p)]
    sup_law, gamma_fitted = fit_supervised(sup_train)
    if len(dist_train) < 2:
        raise ValueError(f"fitting the distillation law needs at least 2 distilled students outside the held-out "
                         f"points, got {len(dist_train)}")
    law = fit_distillation(dist_train, sup_law)

    def error(points: Sequence[Point], distilled_points: bool) -> Optional[FitError]:
        if not points:
            return None
        predicted = np.array([float(law.loss(p.params, p.tokens, p.teacher_loss)) if distilled_points
                              else float(sup_law.loss(p.params, p.tokens)) for p in points])
        return FitError.of(predicted, np.array([p.loss for p in points]))

    def span(values: list[float]) -> list[float]:
        return [min(values), max(values)]

    fitted = sup_train + dist_train
    law = replace(law, parameter_count=parameter_count, fitted_range={"params": span([p.params for p in fitted]),
                                     "tokens": span([p.tokens for p in fitted]),
                                     "teacher_loss": span([p.teacher_loss for p in dist_train])})
    return LawFit(law, error(sup_train, False), error(sup_test, False), error(dist_train, True),
                  error(dist_test, True), gamma_fitted)
