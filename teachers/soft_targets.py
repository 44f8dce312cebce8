"""The soft-target record (DESIGN.md, "Soft targets") and its validation.

A record holds one teacher's answer for one batch: dense `logits` for small output spaces, or
the top-k of the temperature-scaled log-distribution plus the log of the mass outside it.
Inside Ray records travel as numpy arrays; nothing here imports ray or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from teachers.errors import SoftTargetError

SCHEMA_VERSION = 1
# A distribution's probabilities sum to one up to float16 rounding of k log-probs.
_MASS_TOLERANCE = 2e-2


@dataclass
class SoftTargets:
    batch_id: str
    teacher: str
    teacher_version: str
    temperature: float
    output_space: str
    num_classes: int
    logits: Optional[np.ndarray] = None        # float32 [B, C], raw (not temperature-scaled)
    topk_idx: Optional[np.ndarray] = None      # int32 [B, k]
    topk_logprob: Optional[np.ndarray] = None  # float16/32 [B, k] of softmax(logits / T)
    tail_logprob: Optional[np.ndarray] = None  # float32 [B], log of the mass outside the top k
    features: dict[str, np.ndarray] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def is_dense(self) -> bool:
        return self.logits is not None

    @property
    def batch_size(self) -> int:
        return int((self.logits if self.is_dense else self.topk_idx).shape[0])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def pack_soft_targets(logits: np.ndarray, *, batch_id: str, teacher: str, teacher_version: str,
                      temperature: float, output_space: str, dense_max_classes: int, top_k: int,
                      ) -> SoftTargets:
    """Turn a teacher's logits [B, C] into a record: dense when C is small, else top-k + tail."""
    logits = np.asarray(logits, dtype=np.float32)
    num_classes = int(logits.shape[-1])
    meta = dict(batch_id=batch_id, teacher=teacher, teacher_version=teacher_version,
                temperature=float(temperature), output_space=output_space, num_classes=num_classes)
    if num_classes <= dense_max_classes:
        return SoftTargets(logits=logits, **meta)
    k = min(top_k, num_classes)
    logprob = _log_softmax(logits / temperature)
    idx = np.argpartition(-logprob, k - 1, axis=-1)[:, :k]
    top = np.take_along_axis(logprob, idx, axis=-1)
    order = np.argsort(-top, axis=-1)
    idx, top = np.take_along_axis(idx, order, -1), np.take_along_axis(top, order, -1)
    top_mass = np.exp(top.astype(np.float64)).sum(-1)
    tail = np.log(np.clip(1.0 - top_mass, 1e-12, None)).astype(np.float32)
    return SoftTargets(topk_idx=idx.astype(np.int32), topk_logprob=top.astype(np.float16),
                       tail_logprob=tail, **meta)


def concat_rows(records: list[SoftTargets]) -> SoftTargets:
    """One record holding the rows of `records` in order (chunks of one batch's answer; all
    share their metadata and are all dense or all top-k with the same k)."""
    first = records[0]
    if len(records) == 1:
        return first
    join = lambda name: np.concatenate([getattr(r, name) for r in records])  # noqa: E731
    if first.is_dense:
        return replace(first, logits=join("logits"), features={})
    return replace(first, topk_idx=join("topk_idx"), topk_logprob=join("topk_logprob"),
                   tail_logprob=join("tail_logprob"), features={})


def _fail(record: SoftTargets, what: str) -> None:
    raise SoftTargetError(
        f"teacher {record.teacher!r} (version {record.teacher_version}) sent a bad soft-target "
        f"record for batch {record.batch_id!r}: {what}"
    )


def validate_soft_targets(record: SoftTargets, *, batch_id: str, batch_size: int, output_space: str,
                          temperature: float, teacher_version: Optional[str] = None) -> SoftTargets:
    """Check a record before a student uses it; raise `SoftTargetError` naming teacher and batch."""
    if not isinstance(record, SoftTargets):
        raise SoftTargetError(f"batch {batch_id!r}: expected a SoftTargets record, got {type(record).__name__}")
    if record.schema_version != SCHEMA_VERSION:
        _fail(record, f"schema version {record.schema_version}, this student reads {SCHEMA_VERSION}")
    if record.batch_id != batch_id:
        _fail(record, f"it answers batch {record.batch_id!r} but {batch_id!r} was asked")
    if record.output_space != output_space:
        _fail(record, f"output space {record.output_space!r} does not match the student's {output_space!r}")
    if teacher_version is not None and record.teacher_version != teacher_version:
        _fail(record, f"teacher version changed mid-run: expected {teacher_version}")
    if not np.isclose(record.temperature, temperature):
        _fail(record, f"temperature {record.temperature} differs from the run's {temperature}")
    check_record_values(record)
    if record.batch_size != batch_size:
        _fail(record, f"shape [{record.batch_size}, ...] does not fit a batch of {batch_size} rows")
    return record


def check_record_values(record: SoftTargets) -> None:
    """Shapes, dtypes, index bounds, finiteness and probability mass of a record on its own."""
    if record.is_dense:
        _check_dense(record)
    else:
        _check_topk(record)
    for name, value in record.features.items():
        if not isinstance(value, np.ndarray) or value.ndim < 2 or len(value) != record.batch_size:
            _fail(record, f"feature {name!r} must be [B, ...] with B = {record.batch_size}")
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            _fail(record, f"feature {name!r} must be finite floats, got {value.dtype}")


def _check_dense(record: SoftTargets) -> None:
    logits = record.logits
    if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.shape[1] != record.num_classes:
        _fail(record, f"logits shape {getattr(logits, 'shape', None)}, expected [B, {record.num_classes}]")
    if logits.dtype.kind != "f":
        _fail(record, f"logits dtype {logits.dtype}, expected a float dtype")
    if not np.isfinite(logits).all():
        _fail(record, f"{int((~np.isfinite(logits)).sum())} logits are NaN or Inf")


def _check_topk(record: SoftTargets) -> None:
    idx, lp, tail = record.topk_idx, record.topk_logprob, record.tail_logprob
    if not all(isinstance(a, np.ndarray) for a in (idx, lp, tail)):
        _fail(record, "a top-k record needs topk_idx, topk_logprob and tail_logprob arrays")
    if idx.ndim != 2 or lp.shape != idx.shape or tail.shape != (idx.shape[0],) or idx.shape[1] > record.num_classes:
        _fail(record, f"top-k shapes idx {idx.shape}, logprob {lp.shape}, tail {tail.shape} do not fit "
                      f"[B, k] with k <= {record.num_classes}")
    if idx.dtype.kind not in "iu" or lp.dtype.kind != "f" or tail.dtype.kind != "f":
        _fail(record, f"top-k dtypes idx {idx.dtype}, logprob {lp.dtype}, tail {tail.dtype}: expected int, float, float")
    if idx.size and (idx.min() < 0 or idx.max() >= record.num_classes):
        _fail(record, f"top-k indices outside [0, {record.num_classes})")
    ordered = np.sort(idx, axis=1)
    repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if len(repeated):
        _fail(record, f"row {int(repeated[0])} repeats a token id among its top k ({len(repeated)} rows do); "
                      f"each id once per row")
    lp32 = lp.astype(np.float32, copy=False)  # float16 arithmetic in numpy is slow; checks run in float32
    if not (np.isfinite(lp32).all() and np.isfinite(tail).all()):
        _fail(record, "top-k log-probabilities are NaN or Inf")
    mass = np.exp(lp32).sum(-1, dtype=np.float64) + np.exp(tail.astype(np.float64))
    if mass.size and np.abs(mass - 1.0).max() > _MASS_TOLERANCE:
        _fail(record, f"probabilities sum to {float(mass.min()):.4f}..{float(mass.max()):.4f}, not 1")
