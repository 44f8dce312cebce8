"""The soft-target record (DESIGN.md, "Soft targets") and its validation.

One temperature convention holds for every kind: a record describes the teacher's distribution
p = softmax(z / T) at the record's `temperature` T, which must be the run's, by log-probabilities
of p. The teacher applies T once, when it packs the record; a student never divides a record's
values by T again. A record holds one teacher's answer for one batch, of one of these kinds:

- `dense`: `logprob` [B, C], log p for every class (small output spaces); each row's
  probabilities sum to one, which validation checks, so raw logits are refused;
- `topk`: the k likeliest tokens of p with their log-probabilities and the log of the mass
  outside them;
- `sampled`: k tokens drawn from p with their log-probabilities and importance weights, so that
  sum_j weight_j * [token_j = v] is an unbiased estimate of p(v) (Anshumann et al., 2025,
  "Sparse Logit Sampling");
- `embedding`: `logits` [B, d], the raw output of a sentence encoder (`embedding:d` output
  spaces), which is no distribution: no temperature applies to it.

Inside Ray records travel as numpy arrays; nothing here imports ray or torch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from ingest import BatchId
from teachers.errors import SoftTargetError

SCHEMA_VERSION = 2  # 2: dense records carry log-probabilities at T (1: raw logits); sampled records
# A distribution's probabilities sum to one up to float16 rounding of k log-probs.
_MASS_TOLERANCE = 2e-2
_DENSE_MASS_TOLERANCE = 1e-3  # float32 log-probabilities of every class


@dataclass
class SoftTargets:
    batch_id: BatchId
    teacher: str
    teacher_version: str
    temperature: float
    output_space: str
    num_classes: int
    logprob: Optional[np.ndarray] = None       # float32 [B, C] of softmax(logits / T) (dense)
    logits: Optional[np.ndarray] = None        # float32 [B, d], a sentence embedding (embedding)
    topk_idx: Optional[np.ndarray] = None      # int32 [B, k]: the top k, or k draws (sampled)
    topk_logprob: Optional[np.ndarray] = None  # float16/32 [B, k] of softmax(logits / T)
    tail_logprob: Optional[np.ndarray] = None  # float32 [B], log of the mass outside the top k (topk)
    sample_weight: Optional[np.ndarray] = None  # float16/32 [B, k], importance weight of each draw (sampled)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.batch_id, BatchId):  # its text form, as the wire formats carry it
            self.batch_id = BatchId.parse(self.batch_id)

    @property
    def is_dense(self) -> bool:
        """Whole rows: a dense distribution or an embedding."""
        return self.logprob is not None or self.logits is not None

    @property
    def is_sampled(self) -> bool:
        return self.sample_weight is not None

    @property
    def kind(self) -> str:
        if self.is_dense:
            return "dense" if self.logprob is not None else "embedding"
        return "sampled" if self.is_sampled else "topk"

    @property
    def batch_size(self) -> int:
        rows = next(a for a in (self.logprob, self.logits, self.topk_idx) if a is not None)
        return int(rows.shape[0])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


TARGET_KINDS = ("topk", "sampled")  # how a record over more than dense_max_classes outputs is cut


def pack_soft_targets(logits: np.ndarray, *, batch_id: BatchId, teacher: str, teacher_version: str,
                      temperature: float, output_space: str, dense_max_classes: int, top_k: int,
                      target_kind: str = "topk", seed: int = 0) -> SoftTargets:
    """Turn a teacher's logits [B, C] into a record at `temperature`: dense log-probabilities
    when C is small, else top-k + tail, or (`target_kind` sampled) `top_k` draws from each row's
    distribution. A sentence encoder's output (`embedding:` spaces) travels raw."""
    logits = np.asarray(logits, dtype=np.float32)
    num_classes = int(logits.shape[-1])
    meta = dict(batch_id=batch_id, teacher=teacher, teacher_version=teacher_version,
                temperature=float(temperature), output_space=output_space, num_classes=num_classes)
    if output_space.startswith("embedding:"):
        return SoftTargets(logits=logits, **meta)
    if num_classes <= dense_max_classes:
        return SoftTargets(logprob=_log_softmax(logits / temperature), **meta)
    if target_kind not in TARGET_KINDS:
        raise ValueError(f"target kind {target_kind!r} is unknown; known: {', '.join(TARGET_KINDS)}")
    k = min(top_k, num_classes)
    logprob = _log_softmax(logits / temperature)
    if target_kind == "sampled":
        return _sampled(logprob, k, np.random.default_rng([seed, zlib.crc32(str(batch_id).encode())]), meta)
    idx = np.argpartition(-logprob, k - 1, axis=-1)[:, :k]
    top = np.take_along_axis(logprob, idx, axis=-1)
    order = np.argsort(-top, axis=-1)
    idx, top = np.take_along_axis(idx, order, -1), np.take_along_axis(top, order, -1)
    top_mass = np.exp(top.astype(np.float64)).sum(-1)
    tail = np.log(np.clip(1.0 - top_mass, 1e-12, None)).astype(np.float32)
    return SoftTargets(topk_idx=idx.astype(np.int32), topk_logprob=top.astype(np.float16),
                       tail_logprob=tail, **meta)


def _sampled(logprob: np.ndarray, k: int, rng: np.random.Generator, meta: dict) -> SoftTargets:
    """k draws with replacement per row from exp(logprob) (inverse CDF over the row's cumulative
    sum); the proposal is the distribution itself, so each draw's importance weight is 1/k."""
    rows = len(logprob)
    cdf = np.cumsum(np.exp(logprob, dtype=np.float64), axis=1)
    cdf /= cdf[:, -1:]
    offsets = np.arange(rows, dtype=np.float64)[:, None]
    draws = rng.random((rows, k)) + offsets  # row r's uniforms in [r, r + 1), its CDF likewise
    flat = np.searchsorted((cdf + offsets).reshape(-1), draws.reshape(-1), side="right").reshape(rows, k)
    idx = np.minimum(flat - (offsets.astype(np.int64) * logprob.shape[1]), logprob.shape[1] - 1)
    idx.sort(axis=1)
    return SoftTargets(topk_idx=idx.astype(np.int32),
                       topk_logprob=np.take_along_axis(logprob, idx, 1).astype(np.float16),
                       sample_weight=np.full((rows, k), 1.0 / k, dtype=np.float16), **meta)


ROW_ARRAYS = ("logprob", "logits", "topk_idx", "topk_logprob", "tail_logprob", "sample_weight")


def select_rows(record: SoftTargets, rows: np.ndarray, batch_id: BatchId) -> SoftTargets:
    """The rows `rows` of `record` (and of its features) as the record of batch `batch_id`."""
    arrays = {name: getattr(record, name)[rows] for name in ROW_ARRAYS if getattr(record, name) is not None}
    return replace(record, batch_id=batch_id, features={n: v[rows] for n, v in record.features.items()}, **arrays)


def shard_layout(record: SoftTargets) -> tuple:
    """What records must share for their rows to be read as one: kind, row widths, features."""
    widths = tuple((name, getattr(record, name).shape[1:], str(getattr(record, name).dtype)) for name in ROW_ARRAYS
                   if getattr(record, name) is not None)
    return (record.kind, record.output_space, widths,
            tuple(sorted((name, value.shape[1:]) for name, value in record.features.items())))


def gather_rows(records: list[SoftTargets], rows: np.ndarray, batch_id: BatchId) -> SoftTargets:
    """The rows `rows` of `records` read as one (their rows numbered one record after the
    other; all of one `shard_layout`) as the record of batch `batch_id`."""
    if len(records) == 1:
        return select_rows(records[0], rows, batch_id)
    sizes = np.array([r.batch_size for r in records])
    ends = np.cumsum(sizes)
    part = np.searchsorted(ends, rows, side="right")
    local = rows - (ends - sizes)[part]
    groups = [(p, part == p) for p in np.unique(part)]

    def gathered(arrays: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(rows), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
        for p, where in groups:
            out[where] = arrays[p][local[where]]
        return out

    first = records[0]
    arrays = {name: gathered([getattr(r, name) for r in records])
              for name in ROW_ARRAYS if getattr(first, name) is not None}
    features = {name: gathered([r.features[name] for r in records]) for name in first.features}
    return replace(first, batch_id=batch_id, features=features, **arrays)


def concat_rows(records: list[SoftTargets]) -> SoftTargets:
    """One record holding the rows of `records` in order (chunks of one batch's answer; all
    share their metadata and kind, and k)."""
    first = records[0]
    if len(records) == 1:
        return first
    arrays = {name: np.concatenate([getattr(r, name) for r in records])
              for name in ROW_ARRAYS if getattr(first, name) is not None}
    return replace(first, features={}, **arrays)


def _fail(record: SoftTargets, what: str) -> None:
    raise SoftTargetError(
        f"teacher {record.teacher!r} (version {record.teacher_version}) sent a bad soft-target "
        f"record for batch {record.batch_id!r}: {what}"
    )


def validate_soft_targets(record: SoftTargets, *, batch_id: BatchId, batch_size: int, output_space: str,
                          temperature: float, teacher_version: Optional[str] = None,
                          target_kind: Optional[str] = None) -> SoftTargets:
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
    if target_kind is not None and not record.is_dense and record.kind != target_kind:
        _fail(record, f"it sent {record.kind} targets where {target_kind} were asked for (a teacher that "
                      f"predates sampled targets answers top-k: update it)")
    check_record_values(record)
    if record.batch_size != batch_size:
        _fail(record, f"shape [{record.batch_size}, ...] does not fit a batch of {batch_size} rows")
    return record


def check_record_values(record: SoftTargets) -> None:
    """Shapes, dtypes, index bounds, finiteness and probability mass of a record on its own."""
    if record.is_dense:
        _check_dense(record)
    elif record.is_sampled:
        _check_sampled(record)
    else:
        _check_topk(record)
    for name, value in record.features.items():
        if not isinstance(value, np.ndarray) or value.ndim < 2 or len(value) != record.batch_size:
            _fail(record, f"feature {name!r} must be [B, ...] with B = {record.batch_size}")
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            _fail(record, f"feature {name!r} must be finite floats, got {value.dtype}")


def _check_dense(record: SoftTargets) -> None:
    values = record.logprob if record.logprob is not None else record.logits
    name = "logprob" if record.logprob is not None else "logits"
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.shape[1] != record.num_classes:
        _fail(record, f"{name} shape {getattr(values, 'shape', None)}, expected [B, {record.num_classes}]")
    if values.dtype.kind != "f":
        _fail(record, f"{name} dtype {values.dtype}, expected a float dtype")
    if not np.isfinite(values).all():
        _fail(record, f"{int((~np.isfinite(values)).sum())} {name} values are NaN or Inf")
    if record.logprob is not None and record.logits is not None:
        _fail(record, "a record is a dense distribution (logprob) or an embedding (logits), not both")
    if record.logprob is not None and len(values):
        mass = np.exp(values.astype(np.float64)).sum(-1)
        worst = int(np.abs(mass - 1.0).argmax())
        if abs(mass[worst] - 1.0) > _DENSE_MASS_TOLERANCE:
            _fail(record, f"row {worst}'s probabilities sum to {mass[worst]:.4g}, not 1: dense records carry "
                          f"log-probabilities at the record's temperature, log_softmax(logits / T), not raw logits")


def _check_entries(record: SoftTargets, second: str, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared checks of a sparse record: ids [B, k] with k <= C, log-probabilities [B, k] and
    `second` ([B] tail or [B, k] weights) of the right shapes and dtypes, ids in range."""
    idx, lp, other = record.topk_idx, record.topk_logprob, getattr(record, second)
    if not all(isinstance(a, np.ndarray) for a in (idx, lp, other)):
        _fail(record, f"a {record.kind} record needs topk_idx, topk_logprob and {second} arrays")
    other_shape = (idx.shape[0],) if second == "tail_logprob" else idx.shape
    if idx.ndim != 2 or lp.shape != idx.shape or other.shape != other_shape or idx.shape[1] > record.num_classes:
        _fail(record, f"{what} shapes idx {idx.shape}, logprob {lp.shape}, {second} {other.shape} do not fit "
                      f"[B, k] with k <= {record.num_classes}")
    if idx.dtype.kind not in "iu" or lp.dtype.kind != "f" or other.dtype.kind != "f":
        _fail(record, f"{what} dtypes idx {idx.dtype}, logprob {lp.dtype}, {second} {other.dtype}: "
                      f"expected int, float, float")
    if idx.size and (idx.min() < 0 or idx.max() >= record.num_classes):
        _fail(record, f"{what} token ids {int(idx.min())}..{int(idx.max())} fall outside [0, {record.num_classes})")
    lp32 = lp.astype(np.float32, copy=False)  # float16 arithmetic in numpy is slow; checks run in float32
    other32 = other.astype(np.float32, copy=False)
    if not (np.isfinite(lp32).all() and np.isfinite(other32).all()):
        _fail(record, f"{what} log-probabilities or {second} are NaN or Inf")
    return idx, lp32, other32


def _check_topk(record: SoftTargets) -> None:
    idx, lp, tail = _check_entries(record, "tail_logprob", "top-k")
    ordered = np.sort(idx, axis=1)
    repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if len(repeated):
        _fail(record, f"row {int(repeated[0])} repeats a token id among its top k ({len(repeated)} rows do); "
                      f"each id once per row")
    if tail.size and tail.max() >= 0:
        _fail(record, f"row {int(tail.argmax())} has a tail mass of {float(np.exp(tail.max())):.4f}; the mass "
                      f"outside the top k lies in [0, 1)")
    mass = np.exp(lp).sum(-1, dtype=np.float64) + np.exp(tail.astype(np.float64))
    if mass.size and np.abs(mass - 1.0).max() > _MASS_TOLERANCE:
        _fail(record, f"probabilities sum to {float(mass.min()):.4f}..{float(mass.max()):.4f}, not 1")


def _check_sampled(record: SoftTargets) -> None:
    """Draws may repeat a token; each carries the teacher's log-probability and a weight > 0."""
    if record.tail_logprob is not None:
        _fail(record, "a sampled record has sample_weight and no tail_logprob")
    _, lp, weight = _check_entries(record, "sample_weight", "sampled")
    if lp.size and lp.max() > _MASS_TOLERANCE:
        _fail(record, f"a drawn token's log-probability is {float(lp.max()):.4f} > 0")
    if weight.size and weight.min() <= 0:
        _fail(record, f"row {int(weight.min(axis=1).argmin())} has an importance weight "
                      f"{float(weight.min()):.4g}; weights must be finite and > 0")
