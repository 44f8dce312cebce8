"""The supervised and distillation scaling laws of Busbridge et al. (2025, "Distillation Scaling
Laws"), in plain numpy.

Losses are cross-entropies in nats per token; N counts parameters and D tokens.

Supervised (their Chinchilla-style form, Eq. 1):

    L(N, D) = E + (A / N**alpha + B / D**beta) ** gamma

Distillation (Eq. 8): a student of N_S parameters distilled on D_S tokens from a teacher of
cross-entropy L_T, where L~_S = L(N_S, D_S) is the same student trained supervised:

    L_S = L_T + L_T**(-c0) * (1 + (L_T / (d1 * L~_S)) ** (1 / f1)) ** (-c1 * f1)
              * (A' / N_S**alpha' + B' / D_S**beta') ** gamma'

The broken power law in L_T / L~_S is the capacity gap: far from the student's own reach
(L_T >> d1 L~_S) a stronger teacher helps, closer to it a stronger teacher makes a worse
student. A' .. gamma' default to the supervised law's.

Compute follows the paper's accounting: training costs 6 N D FLOPs, a forward 2 N D.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

TRAIN_FLOPS_PER_PARAM_TOKEN = 6.0
FORWARD_FLOPS_PER_PARAM_TOKEN = 2.0


@dataclass(frozen=True)
class SupervisedLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    gamma: float

    def loss(self, n, d):
        """Cross-entropy of a model of `n` parameters trained on `d` tokens (arrays broadcast)."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + (self.A / n ** self.alpha + self.B / d ** self.beta) ** self.gamma

    def floor(self, n) -> float:
        """The loss `n` parameters reach with unlimited tokens."""
        return self.E + (self.A / float(n) ** self.alpha) ** self.gamma

    def tokens_for(self, n: float, target: float) -> float:
        """Tokens a model of `n` parameters needs to reach `target`; inf when it never does."""
        if target <= self.floor(n):
            return float("inf")
        rest = (target - self.E) ** (1 / self.gamma) - self.A / n ** self.alpha
        return float((self.B / rest) ** (1 / self.beta))


@dataclass(frozen=True)
class DistillationLaw:
    supervised: SupervisedLaw
    c0: float
    c1: float
    d1: float
    f1: float
    # The student's own power law inside the distillation term; None: the supervised law's.
    A: Optional[float] = None
    B: Optional[float] = None
    alpha: Optional[float] = None
    beta: Optional[float] = None
    gamma: Optional[float] = None
    source: str = field(default="", compare=False)  # where the coefficients come from
    # how N counts parameters: "non_embedding" (the paper's convention) or "all"
    parameter_count: str = field(default="all", compare=False)
    # {"params": [lo, hi], "tokens": [lo, hi], "teacher_loss": [lo, hi]} of the points fitted on
    fitted_range: Optional[dict] = field(default=None, compare=False)

    def outside_fitted_range(self, **values: Optional[float]) -> list[str]:
        """The given quantities that fall outside the range the law was fitted on."""
        out = []
        for name, value in values.items():
            lo_hi = (self.fitted_range or {}).get(name)
            if value is not None and lo_hi and not lo_hi[0] <= value <= lo_hi[1]:
                out.append(f"{name} {value:.3g} outside the fitted {lo_hi[0]:.3g}..{lo_hi[1]:.3g}")
        return out

    def _own(self, name: str) -> float:
        value = getattr(self, name)
        return getattr(self.supervised, name) if value is None else value

    def loss(self, n_student, d_student, teacher_loss):
        """Cross-entropy of a student of `n_student` parameters distilled on `d_student`
        tokens from a teacher of cross-entropy `teacher_loss` (arrays broadcast)."""
        n, d = np.asarray(n_student, dtype=float), np.asarray(d_student, dtype=float)
        lt = np.asarray(teacher_loss, dtype=float)
        supervised = self.supervised.loss(n, d)
        transition = (1 + (lt / (self.d1 * supervised)) ** (1 / self.f1)) ** (-self.c1 * self.f1)
        reach = (self._own("A") / n ** self._own("alpha") + self._own("B") / d ** self._own("beta")) \
            ** self._own("gamma")
        return lt + lt ** (-self.c0) * transition * reach

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "DistillationLaw":
        return cls(**{**data, "supervised": SupervisedLaw(**data["supervised"])})

    def with_source(self, source: str) -> "DistillationLaw":
        return replace(self, source=source)


def load_law(path: str | Path) -> DistillationLaw:
    """A law written by `distillery fit-law` (or by hand: the JSON of `DistillationLaw`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        law = DistillationLaw.from_dict(data)
    except FileNotFoundError:
        raise ValueError(f"no scaling-law file at {path}: write one with `distillery fit-law` (or "
                         f"`distillery sweep`), or pass --law with a file of coefficients") from None
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a scaling-law file ({type(exc).__name__}: {exc}); it needs "
                         f"{{supervised: {{E, A, B, alpha, beta, gamma}}, c0, c1, d1, f1}}") from None
    return law.with_source(law.source or str(path))


def train_flops(n: float, d: float) -> float:
    return TRAIN_FLOPS_PER_PARAM_TOKEN * n * d


def forward_flops(n: float, d: float) -> float:
    return FORWARD_FLOPS_PER_PARAM_TOKEN * n * d
