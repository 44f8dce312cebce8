"""Multi-teacher weighting: the weights by which several teachers' soft targets merge, per sample
(the merge itself: `students.teacher_merge`).

Every strategy gives weights w[b, i] over the teachers that answered for the batch (each row
sums to one); the merged target is the mixture log sum_i w[b, i] p_i(T). With s_i the teachers'
static weights (the config's `weight`, changeable while a run goes) and tau the `sharpness`:

  static           w[b, i] = s_i / sum_j s_j
  confidence       w[b, i] = softmax_i(log s_i + log max_c p_i(c | x_b) / tau)
  entropy          w[b, i] = softmax_i(log s_i - H(p_i(. | x_b)) / tau)
  label_agreement  w[b, i] = softmax_i(log s_i + log p_i(y_b | x_b) / tau), the teacher's
                   agreement with the hard label (CA-MKD, Zhang et al. 2022, weighs teachers by
                   their cross-entropy with the label the same way)
  gating           w[b, i] = softmax_i(log s_i + g_i(x_b)), g a small network trained with the
                   student to make the gated mixture predict the label:
                   loss_gate = -mean_b log sum_i w[b, i] p_i(y_b | x_b)
                   (the student's target uses w without gradient, so the gate is not pulled
                   towards the teacher the student finds easiest to match)
  route            w[b, i] = 1 for the teacher that `routes` names for the sample's value in the
                   data column `column`; samples whose teacher did not answer use static weights.

All p_i are the teachers' distributions at the run's temperature T. Plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from students.config import STRATEGIES


@dataclass(frozen=True)
class Weighting:
    strategy: str = "static"
    sharpness: float = 1.0
    gate_teachers: tuple[str, ...] = ()  # gating: the teachers the gate has an output for, in order
    gate_hidden: int = 32
    gate_loss_weight: float = 1.0
    column: Optional[str] = None
    routes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"weighting strategy {self.strategy!r} is unknown; known: {list(STRATEGIES)}")

    @classmethod
    def from_config(cls, cfg: Any, gate_teachers: list[str]) -> "Weighting":
        """From a `WeightingConfig`; `gate_teachers` are the method's teachers."""
        return cls(cfg.strategy, cfg.sharpness, tuple(gate_teachers) if cfg.strategy == "gating" else (),
                   cfg.gate_hidden, cfg.gate_loss_weight, cfg.column, dict(cfg.routes))


def _route_weights(weighting: Weighting, names: list[str], column: np.ndarray, static: torch.Tensor) -> torch.Tensor:
    position = {name: i for i, name in enumerate(names)}
    weights = static.expand(len(column), -1).clone()
    for b, value in enumerate(np.asarray(column).tolist()):
        teacher = weighting.routes.get(str(value))
        if teacher in position:
            weights[b] = 0.0
            weights[b, position[teacher]] = 1.0
    return weights


def teacher_weights(weighting: Weighting, names: list[str], static: torch.Tensor, labels: torch.Tensor,
                    scores: Callable[[str], torch.Tensor], gate_logits: Optional[torch.Tensor] = None,
                    columns: Optional[dict[str, np.ndarray]] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The weights [B, N] of the teachers `names` for one batch (no gradient), and the gate's
    loss for `gating`. `scores(strategy)`: the teachers' per-sample scores [B, N] (dense
    distributions or sparse records give them alike); `label_agreement`'s are log p_i(y)."""
    log_static = torch.log(static.clamp(min=0))
    gate_loss = None
    strategy = weighting.strategy
    if strategy == "static":
        weights = static.expand(len(labels), -1)
    elif strategy in ("confidence", "entropy", "label_agreement"):
        weights = torch.softmax(log_static + scores(strategy) / weighting.sharpness, dim=1)
    elif strategy == "gating":
        if gate_logits is None:
            raise ValueError("weighting strategy 'gating': the student module has no gate; build it with "
                             "gate_teachers (students.student_module.DistillationStudent)")
        gate = {name: i for i, name in enumerate(weighting.gate_teachers)}
        zeros = torch.zeros(len(labels), device=gate_logits.device, dtype=gate_logits.dtype)
        logits = torch.stack([gate_logits[:, gate[n]] if n in gate else zeros for n in names], dim=1)
        log_weights = torch.log_softmax(logits.float() + log_static, dim=1)
        weights = log_weights.exp()
        gate_loss = -torch.logsumexp(log_weights + scores("label_agreement"), dim=1).mean()
    else:  # route
        if not columns or weighting.column not in columns:
            raise ValueError(f"weighting strategy 'route': the batch has no data column {weighting.column!r}; "
                             f"its columns: {sorted(columns or {})}")
        weights = _route_weights(weighting, names, columns[weighting.column], static)
    return weights.detach(), gate_loss
