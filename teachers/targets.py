"""Turn validated soft-target records into tensors and merge several teachers by weight.

Merging happens in probability space: the mixture sum_i w_i p_i(T) of the teachers'
temperature-scaled distributions (weights renormalised over the teachers that answered).
Logit matching merges logits linearly instead: T log p_i(T), which are the teacher's logits up to
a shift per row (softmax ignores it), centred; or a sentence encoder's raw embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from teachers.soft_targets import SoftTargets


def record_logprob(record: SoftTargets, temperature: float) -> torch.Tensor:
    """Temperature-scaled log-distribution [B, C] of one record.

    Dense and top-k records carry it at their temperature (`teachers.soft_targets`); top-k
    records spread the tail mass evenly over the classes outside their top k. An embedding
    record is no distribution: its softmax at `temperature` stands in where a merge asks.
    """
    if record.logprob is not None:
        return torch.tensor(record.logprob, dtype=torch.float32)
    if record.logits is not None:
        return torch.log_softmax(torch.tensor(record.logits, dtype=torch.float32) / temperature, dim=-1)
    if record.is_sampled:
        raise ValueError(f"teacher {record.teacher!r} sent sampled targets for batch {record.batch_id!r}: they "
                         f"estimate the distribution for the kd term (students.sparse_kd) and have no dense form")
    batch, k = record.topk_idx.shape
    rest = record.num_classes - k
    fill = (torch.tensor(record.tail_logprob, dtype=torch.float32) - math.log(rest)) if rest else torch.full((batch,), -math.inf)
    out = fill[:, None].expand(batch, record.num_classes).clone()
    out.scatter_(1, torch.from_numpy(record.topk_idx.astype(np.int64)),
                 torch.from_numpy(record.topk_logprob.astype(np.float32)))
    return out


@dataclass
class TeacherTargets:
    """The teachers' records for one batch and the (normalised) weight of each."""

    records: dict[str, SoftTargets]
    weights: dict[str, float]

    def __post_init__(self) -> None:
        total = sum(self.weights[name] for name in self.records)
        if total <= 0:
            raise ValueError(f"teacher weights {self.weights} sum to {total}; at least one must be > 0")
        self.weights = {name: self.weights[name] / total for name in self.records}

    @property
    def names(self) -> list[str]:
        return list(self.records)

    @property
    def all_sparse(self) -> bool:
        """Every record is top-k or sampled (the loss can then run without a dense teacher tensor)."""
        return all(not rec.is_dense for rec in self.records.values())

    def static_weights(self) -> torch.Tensor:
        """[N] the normalised weights, in the order of `names`."""
        return torch.tensor([self.weights[name] for name in self.records], dtype=torch.float32)

    def stacked_logprob(self, temperature: float) -> torch.Tensor:
        """[N, B, C] every teacher's temperature-scaled log-distribution, in the order of `names`."""
        return torch.stack([record_logprob(rec, temperature) for rec in self.records.values()])

    def features(self) -> dict[str, torch.Tensor]:
        """Every teacher's named features as float32 tensors, keyed '<teacher>/<layer>'."""
        return {f"{name}/{layer}": torch.from_numpy(np.asarray(value, dtype=np.float32))
                for name, rec in self.records.items() for layer, value in rec.features.items()}

    @property
    def centred_logits(self) -> bool:
        """Whether `logits` are known up to a shift per row only (distributions), so that logit
        matching compares centred logits; embeddings are matched as they are."""
        return any(rec.logprob is not None for rec in self.records.values())

    def logits(self, sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """sum_i w_i z_i of dense rows, shape [B, C]: the centred logits T log p_i(T) of
        distributions, or raw embeddings; `sample_weights` [B, N] replaces the static weights
        with per-sample ones (in the order of `names`)."""
        out = None
        for i, (name, rec) in enumerate(self.records.items()):
            if not rec.is_dense:
                raise ValueError(f"logit matching needs dense logits; teacher {name!r} sent {rec.kind} targets "
                                 "(raise distill.dense_max_classes or use loss hinton_kd)")
            weight = self.weights[name] if sample_weights is None else sample_weights[:, i, None].cpu()
            if rec.logprob is not None:
                z = torch.tensor(rec.logprob, dtype=torch.float32) * rec.temperature
                part = (z - z.mean(dim=-1, keepdim=True)) * weight
            else:
                part = torch.tensor(rec.logits, dtype=torch.float32) * weight
            out = part if out is None else out + part
        return out
