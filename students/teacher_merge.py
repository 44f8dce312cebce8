"""The one route from a batch's soft-target records to the tensors the loss terms read: every
record kind (dense, top-k with tail, sampled; embeddings) under every weighting strategy
(`students.weighting`) is merged here, behind `merge_targets`. Plain torch; `teachers/` only
hands over the validated records (`teachers.TeacherTargets`).

Merging happens in probability space: the mixture sum_i w[b, i] p_i(T) of the teachers'
temperature-scaled distributions. Dense records are stacked into [N, B, C]; top-k and sampled
records stay sparse (`students.sparse_kd`): a dense [B, V] teacher tensor is never built for
them. Logit matching merges logits linearly instead: T log p_i(T), which are the teacher's
logits up to a shift per row (softmax ignores it), centred; or a sentence encoder's raw
embeddings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch

from students.sparse_kd import SampledTargets, SparseTargets, SparseTeacher, merge_sparse
from students.weighting import Weighting, teacher_weights
from teachers import SoftTargets, TeacherTargets


@dataclass
class TeacherInputs:
    """What the loss terms read of a batch's teachers, merged: a dense mixture (`logprob`) or a
    sparse one (`sparse`), the merged logits where logit matching asks, the features, each
    teacher's mean weight and the gate's loss (`gating`)."""

    logprob: Optional[torch.Tensor] = None  # [B, C] log sum_i w[b, i] p_i(T), no gradient
    sparse: Optional[Union[SparseTargets, SampledTargets]] = None
    logits: Optional[torch.Tensor] = None
    centred_logits: bool = False
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    mean_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    gate_loss: Optional[torch.Tensor] = None


def merge_targets(weighting: Weighting, targets: TeacherTargets, labels: torch.Tensor, device: torch.device, *,
                  temperature: float, sparse: bool, needs_logits: bool = False,
                  gate_logits: Optional[torch.Tensor] = None, columns: Optional[dict[str, Any]] = None) -> TeacherInputs:
    """The batch's records merged by `weighting` on `device`: sparse when the terms take sparse
    targets (`sparse`) and every record is top-k or sampled, dense otherwise."""
    features = {k: v.to(device) for k, v in teacher_features(targets).items()}
    if sparse and targets.all_sparse:
        merged, weights, gate_loss = sparse_merge(weighting, targets, labels, device, gate_logits, columns)
        return TeacherInputs(sparse=merged, features=features, gate_loss=gate_loss,
                             mean_weights={n: weights[:, i].mean() for i, n in enumerate(targets.names)})
    dense = merge_teachers(weighting, targets.names, stacked_logprob(targets, temperature).to(device),
                           static_weights(targets).to(device), labels, gate_logits, columns)
    return TeacherInputs(logprob=dense.logprob, features=features, gate_loss=dense.gate_loss,
                         logits=merged_logits(targets, dense.weights).to(device) if needs_logits else None,
                         centred_logits=centred_logits(targets), mean_weights=dense.mean_weights(targets.names))


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


def static_weights(targets: TeacherTargets) -> torch.Tensor:
    """[N] the normalised weights, in the order of `targets.names`."""
    return torch.tensor([targets.weights[name] for name in targets.records], dtype=torch.float32)


def stacked_logprob(targets: TeacherTargets, temperature: float) -> torch.Tensor:
    """[N, B, C] every teacher's temperature-scaled log-distribution, in the order of `names`."""
    return torch.stack([record_logprob(rec, temperature) for rec in targets.records.values()])


def teacher_features(targets: TeacherTargets) -> dict[str, torch.Tensor]:
    """Every teacher's named features as float32 tensors, keyed '<teacher>/<layer>'."""
    return {f"{name}/{layer}": torch.from_numpy(np.asarray(value, dtype=np.float32))
            for name, rec in targets.records.items() for layer, value in rec.features.items()}


def centred_logits(targets: TeacherTargets) -> bool:
    """Whether `merged_logits` are known up to a shift per row only (distributions), so that logit
    matching compares centred logits; embeddings are matched as they are."""
    return any(rec.logprob is not None for rec in targets.records.values())


def merged_logits(targets: TeacherTargets, sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """sum_i w_i z_i of dense rows, shape [B, C]: the centred logits T log p_i(T) of
    distributions, or raw embeddings; `sample_weights` [B, N] replaces the static weights
    with per-sample ones (in the order of `names`)."""
    out = None
    for i, (name, rec) in enumerate(targets.records.items()):
        if not rec.is_dense:
            raise ValueError(f"logit matching needs dense logits; teacher {name!r} sent {rec.kind} targets "
                             "(raise distill.dense_max_classes or use loss hinton_kd)")
        weight = targets.weights[name] if sample_weights is None else sample_weights[:, i, None].cpu()
        if rec.logprob is not None:
            z = torch.tensor(rec.logprob, dtype=torch.float32) * rec.temperature
            part = (z - z.mean(dim=-1, keepdim=True)) * weight
        else:
            part = torch.tensor(rec.logits, dtype=torch.float32) * weight
        out = part if out is None else out + part
    return out


@dataclass
class MergedTargets:
    logprob: torch.Tensor                   # [B, C], log sum_i w[b, i] p_i(T), no gradient
    weights: torch.Tensor                   # [B, N], no gradient
    gate_loss: Optional[torch.Tensor] = None  # gating: the gate's label loss (carries the gradient)

    def mean_weights(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Each teacher's mean weight over the batch (what the metrics report per teacher)."""
        return {name: self.weights[:, i].mean() for i, name in enumerate(names)}


def _scores(strategy: str, logprob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, N] per-sample teacher scores of the score-based strategies; logprob is [N, B, C]."""
    if strategy == "confidence":
        return logprob.max(-1).values.T
    if strategy == "entropy":
        p = logprob.exp()
        return torch.where(p > 0, p * logprob, torch.zeros_like(p)).sum(-1).T  # -H
    index = labels[None, :, None].expand(logprob.shape[0], -1, 1)
    return logprob.gather(2, index).squeeze(2).T  # label_agreement: log p_i(y)


def merge_teachers(weighting: Weighting, names: list[str], logprob: torch.Tensor, static: torch.Tensor,
                   labels: torch.Tensor, gate_logits: Optional[torch.Tensor] = None,
                   columns: Optional[dict[str, np.ndarray]] = None) -> MergedTargets:
    """Merge the teachers `names` (their log-distributions `logprob` [N, B, C] at the run's
    temperature, static weights `static` [N] summing to one) for one batch."""
    logprob = logprob.detach()
    weights, gate_loss = teacher_weights(weighting, names, static, labels,
                                         lambda strategy: _scores(strategy, logprob, labels), gate_logits, columns)
    mixed = torch.logsumexp(torch.log(weights.T)[:, :, None] + logprob, dim=0)
    return MergedTargets(mixed, weights, gate_loss)


def sparse_merge(weighting: Weighting, targets: TeacherTargets, labels: torch.Tensor, device: torch.device,
                 gate_logits: Optional[torch.Tensor] = None,
                 columns: Optional[dict[str, np.ndarray]] = None,
                 ) -> tuple[Union[SparseTargets, SampledTargets], torch.Tensor, Optional[torch.Tensor]]:
    """The top-k (or sampled) records of `targets` on `device`, weighted as `weighting` says and
    merged: (the mixture, or the pooled draws; the weights [B, N]; the gate's loss for `gating`)."""
    kinds = {rec.kind for rec in targets.records.values()}
    if kinds not in ({"topk"}, {"sampled"}):
        raise ValueError(f"batch {next(iter(targets.records.values())).batch_id!r}: teachers "
                         f"{sorted(targets.names)} sent records of kinds {sorted(kinds)}; a batch's sparse "
                         f"records are all top-k or all sampled")
    records = list(targets.records.values())
    if kinds == {"sampled"}:
        teachers = []
        scores = _no_scores
    else:
        teachers = [SparseTeacher.of(_on(r.topk_idx, device), _on(r.topk_logprob, device), _on(r.tail_logprob, device),
                                     r.num_classes) for r in records]
        scores = lambda strategy: torch.stack([t.score(strategy, labels) for t in teachers], dim=1)  # noqa: E731
    weights, gate_loss = teacher_weights(weighting, targets.names, static_weights(targets).to(device), labels, scores,
                                         gate_logits, columns)
    if not teachers:
        return _pool_draws(records, weights, device), weights, gate_loss
    return merge_sparse(teachers, weights, records[0].num_classes), weights, gate_loss


def _on(array: np.ndarray, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array)).to(device=device, dtype=dtype)


def _no_scores(strategy: str) -> torch.Tensor:
    raise ValueError(f"weighting strategy {strategy!r} scores each teacher's whole distribution; sampled "
                     f"targets carry draws of it (use static or route weighting, or topk targets)")


def _pool_draws(records: list, weights: torch.Tensor, device: torch.device) -> SampledTargets:
    """Every teacher's draws side by side, each weighted by its teacher's weight [B, N]."""
    return SampledTargets(
        ids=torch.cat([_on(r.topk_idx, device, torch.long) for r in records], dim=1),
        weight=torch.cat([weights[:, i, None] * _on(r.sample_weight, device, torch.float32)
                          for i, r in enumerate(records)], dim=1),
        logprob=torch.cat([_on(r.topk_logprob, device, torch.float32) for r in records], dim=1))
