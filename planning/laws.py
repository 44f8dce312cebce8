"""The supervised and distillation scaling laws of Busbridge et al. (2025, "Distillation Scaling
Laws", ICML 2025), in plain numpy, with the paper's published coefficients built in.

Losses are cross-entropies in nats per token; N counts non-embedding parameters (the paper's
convention; a fitted law records how it counted them) and D tokens.

Supervised (their Chinchilla-style form, Eq. 1):

    L(N, D) = E + (A / N**alpha + B / D**beta) ** gamma

Distillation (Eq. 8): a student of N_S parameters distilled on D_S tokens from a teacher of
cross-entropy L_T, where L~_S = L(N_S, D_S) is the same student trained supervised:

    L_S = L_T + L_T**(-c0) * (1 + (L_T / (d1 * L~_S)) ** (1 / f1)) ** (-c1 * f1)
              * (A' / N_S**alpha' + B' / D_S**beta') ** gamma'

The broken power law in L_T / L~_S is the capacity gap: far from the student's own reach
(L_T >> d1 L~_S) a stronger teacher helps, closer to it a stronger teacher makes a worse
student. The primed coefficients A' .. gamma' are their own numbers, not the supervised law's.

Compute follows the paper: a forward costs F(N) FLOPs per token (`ForwardCost`), training
3 F(N) per token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

PRIMED = ("A", "B", "alpha", "beta", "gamma")  # the distillation law's own power law in N_S and D_S


@dataclass(frozen=True)
class ForwardCost:
    """The paper's forward cost per token, larger than 2N by its attention and vocabulary terms:

        F(N) = 2N (1 + s1 n_ctx / N^(1/3) + s2 n_vocab / N^(2/3)),
        s1 = (1 / (rho omega^2))^(1/3),  s2 = (rho / omega)^(1/3)

    with the paper's context, vocabulary and width/depth ratio rho by default: set them to
    your models' (`distillery plan --n-ctx --n-vocab --aspect-ratio`)."""

    n_ctx: float = 4096
    n_vocab: float = 32768
    rho: float = 128
    omega: float = 12

    def forward(self, n):
        """FLOPs per token of one forward of a model of `n` parameters (arrays broadcast)."""
        n = np.asarray(n, dtype=float)
        s1 = (1 / (self.rho * self.omega ** 2)) ** (1 / 3)
        s2 = (self.rho / self.omega) ** (1 / 3)
        return 2 * n * (1 + s1 * self.n_ctx / n ** (1 / 3) + s2 * self.n_vocab / n ** (2 / 3))

    def train(self, n, d):
        """FLOPs to train `n` parameters on `d` tokens: 3 F(N) per token."""
        return 3 * self.forward(n) * np.asarray(d, dtype=float)

    def forwards(self, n, d):
        """FLOPs of forwards of `n` parameters over `d` tokens (a teacher on the student's tokens)."""
        return self.forward(n) * np.asarray(d, dtype=float)


PAPER_COST = ForwardCost()


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
    # The student's own power law inside the distillation term (A', B', alpha', beta', gamma').
    A: float
    B: float
    alpha: float
    beta: float
    gamma: float
    source: str = field(default="", compare=False)  # where the coefficients come from
    # how N counts parameters: "non_embedding" (the paper's convention) or "all"
    parameter_count: str = field(default="non_embedding", compare=False)
    # what the losses are: the data and tokenizer they were measured on
    units: str = field(default="nats per token of the runs it was fitted to", compare=False)
    # how A' .. gamma' were obtained: "published", "fitted", or "tied" (set to the supervised law's)
    primed: str = field(default="fitted", compare=False)
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

    def loss(self, n_student, d_student, teacher_loss):
        """Cross-entropy of a student of `n_student` parameters distilled on `d_student`
        tokens from a teacher of cross-entropy `teacher_loss` (arrays broadcast)."""
        n, d = np.asarray(n_student, dtype=float), np.asarray(d_student, dtype=float)
        lt = np.asarray(teacher_loss, dtype=float)
        supervised = self.supervised.loss(n, d)
        transition = (1 + (lt / (self.d1 * supervised)) ** (1 / self.f1)) ** (-self.c1 * self.f1)
        reach = (self.A / n ** self.alpha + self.B / d ** self.beta) ** self.gamma
        return lt + lt ** (-self.c0) * transition * reach

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "DistillationLaw":
        """A law from its JSON; a file written before the primed coefficients were kept apart
        (A' .. gamma' missing or null) reads them as the supervised law's, marked `tied`."""
        supervised = SupervisedLaw(**data["supervised"])
        data = {**data, "supervised": supervised}
        if any(data.get(k) is None for k in PRIMED):
            data.update({k: getattr(supervised, k) for k in PRIMED}, primed="tied")
        return cls(**data)

    @classmethod
    def tied(cls, supervised: SupervisedLaw, **coefficients) -> "DistillationLaw":
        """A law whose primed coefficients are the supervised law's."""
        return cls(supervised, **coefficients, **{k: getattr(supervised, k) for k in PRIMED}, primed="tied")

    def with_source(self, source: str) -> "DistillationLaw":
        return replace(self, source=source)


# Busbridge et al. (2025), Table 6: fitted on the paper's English web text (32k-vocabulary
# tokenizer, context 4096), N non-embedding.
PAPER_LAW = DistillationLaw(
    SupervisedLaw(E=1.220, A=3355.0, B=18186.0, alpha=0.408, beta=0.431, gamma=0.452),
    c0=2.549, c1=522.6, f1=0.090, d1=1.315, A=2243.0, B=24181.0, alpha=0.321, beta=0.637, gamma=0.764,
    source="paper: Busbridge et al. 2025, Distillation Scaling Laws, Table 6", parameter_count="non_embedding",
    units="nats per token of the paper's English web text (32k-token vocabulary, context 4096)", primed="published")
PAPER = "paper"


def resolve_law(choice: Optional[str], fitted_default: str | Path) -> DistillationLaw:
    """The law `distillery plan` uses: `paper` (the published one), a law file, or (nothing
    given) the fitted law at `fitted_default` when there is one, else the published law."""
    if choice == PAPER or (choice is None and not Path(fitted_default).is_file()):
        return PAPER_LAW
    return load_law(choice or fitted_default)


def load_law(path: str | Path) -> DistillationLaw:
    """A law written by `distillery fit-law` (or by hand: the JSON of `DistillationLaw`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        law = DistillationLaw.from_dict(data)
    except FileNotFoundError:
        raise ValueError(f"no scaling-law file at {path}: write one with `distillery fit-law` (or "
                         f"`distillery sweep`), pass --law with a file of coefficients, or --law paper for "
                         f"the published law") from None
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a scaling-law file ({type(exc).__name__}: {exc}); it needs "
                         f"{{supervised: {{E, A, B, alpha, beta, gamma}}, c0, c1, d1, f1, A, B, alpha, beta, "
                         f"gamma}}") from None
    return law.with_source(law.source or str(path))
