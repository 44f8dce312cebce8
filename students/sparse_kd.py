"""KD from top-k records without a dense teacher tensor: the teachers' k entries and tail mass
merged on the union of their token ids, and the KD terms computed against the student's
log-probabilities gathered at those ids plus the student's own mass on every other token.

A top-k record stands for the distribution that puts its k log-probabilities on its ids and
spreads its tail mass evenly over the other V - k tokens (`teachers.targets.record_logprob`
builds that distribution densely). Several teachers mix as w_i p_i; on the union U of their
ids the mixture is explicit, and off U every token gets the same value
c = sum_i w_i tail_i / (V - k_i). So with s = log_softmax(z / T) of the student:

  KL(p_t || p_s) = sum_{u in U} p_t(u) (log p_t(u) - s(u)) + (V - |U|) c log c
                   - c (sum_v s(v) - sum_{u in U} s(u))
  KL(p_s || p_t) = sum_v p_s(v) s(v) - sum_{u in U} p_s(u) log p_t(u)
                   - log c (1 - sum_{u in U} p_s(u))

which are today's dense values exactly, while the only [B, V] tensors are the student's.

A sampled record holds k draws v_j of the teacher's distribution with importance weights w_j,
so that sum_j w_j [v_j = v] estimates p_t(v) without bias. Forward KL is linear in p_t, so

  KL(p_t || p_s) ~ sum_j w_j (log p_t(v_j) - s(v_j))

is an unbiased estimate of the value and of its gradient (Anshumann et al., 2025). Several
teachers' draws are pooled with their weights: the gradient is that of the KL to their mixture,
the value the weighted mean of the per-teacher KLs. Reverse KL and JSD are not linear in p_t
and take top-k records only. The
student's side runs in row chunks, recomputed in the backward, so its log-softmax is never
held for the whole batch: what the loss keeps beyond the logits and their gradient is one
chunk's worth. Plain torch, on the student's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable, Optional, Union

import torch


CHUNK_ELEMENTS = 1 << 23  # a chunk of rows holds about this many logits (32 MiB of float32)


@dataclass
class SparseTeacher:
    """One teacher's top-k record as tensors: ids [B, k] sorted, their log-probabilities at T,
    and the log-probability of each token outside the top k (`fill` [B], -inf when k = V)."""

    ids: torch.Tensor
    logprob: torch.Tensor
    fill: torch.Tensor
    tail: torch.Tensor  # [B] log of the tail mass

    @classmethod
    def of(cls, ids: torch.Tensor, logprob: torch.Tensor, tail: torch.Tensor, vocab: int) -> "SparseTeacher":
        ids, order = ids.long().sort(dim=1)
        rest = vocab - ids.shape[1]
        fill = tail - math.log(rest) if rest else torch.full_like(tail, -math.inf)
        return cls(ids, logprob.float().gather(1, order), fill, tail.float())

    def at(self, tokens: torch.Tensor) -> torch.Tensor:
        """The teacher's log-probability of `tokens` [B, M]."""
        pos = torch.searchsorted(self.ids, tokens).clamp(max=self.ids.shape[1] - 1)
        hit = self.ids.gather(1, pos) == tokens
        return torch.where(hit, self.logprob.gather(1, pos), self.fill[:, None].expand_as(tokens))

    def score(self, strategy: str, labels: torch.Tensor) -> torch.Tensor:
        """[B] what a score-based weighting strategy reads (`students.weighting`)."""
        if strategy == "confidence":
            return torch.maximum(self.logprob.max(1).values, self.fill)
        if strategy == "entropy":  # -H: the top k, then the tail's tokens at `fill` each
            top = torch.where(self.logprob > -math.inf, self.logprob.exp() * self.logprob,
                              torch.zeros_like(self.logprob)).sum(1)
            return top + torch.where(self.fill > -math.inf, self.tail.exp() * self.fill, torch.zeros_like(self.fill))
        return self.at(labels[:, None]).squeeze(1)  # label_agreement, gating: log p_i(y)


@dataclass
class SparseTargets:
    """The teachers' mixture on the union of their ids: `ids` [B, U] (a token repeated in a row
    counts once: `valid`), the mixture's log-probability there, and `rest` [B], the
    log-probability of each of the `vocab - count` tokens outside the union."""

    ids: torch.Tensor
    valid: torch.Tensor
    logprob: torch.Tensor
    rest: torch.Tensor
    vocab: int

    @property
    def count(self) -> torch.Tensor:
        return self.valid.sum(1)


@dataclass
class SampledTargets:
    """The teachers' draws pooled: token ids [B, M], each draw's weight (its teacher's weight
    times its importance weight) and its teacher's log-probability of the token."""

    ids: torch.Tensor
    weight: torch.Tensor
    logprob: torch.Tensor


def merge_sparse(teachers: list[SparseTeacher], weights: torch.Tensor, vocab: int) -> SparseTargets:
    """The mixture sum_i w[b, i] p_i of the teachers (weights [B, N], rows summing to one)."""
    ids = torch.cat([t.ids for t in teachers], dim=1).sort(dim=1).values
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[:, 1:] = ids[:, 1:] != ids[:, :-1]
    log_w = torch.log(weights.T.float())[:, :, None]  # [N, B, 1]
    values = torch.stack([t.at(ids) for t in teachers])  # [N, B, U]
    mixed = torch.logsumexp(log_w + values, dim=0).masked_fill(~valid, -math.inf)
    rest = torch.logsumexp(log_w[:, :, 0] + torch.stack([t.fill for t in teachers]), dim=0)
    return SparseTargets(ids, valid, mixed, rest, vocab)


def _xlogy(x: torch.Tensor, log_y: torch.Tensor) -> torch.Tensor:
    """x * log_y with 0 * anything = 0 (a token the distribution never gives)."""
    return torch.where(x > 0, x * log_y, torch.zeros_like(x))


def _forward_kl_rows(logits: torch.Tensor, temperature: float, t: SparseTargets) -> torch.Tensor:
    s = torch.log_softmax(logits.float() / temperature, dim=-1)
    s_u = s.gather(1, t.ids)
    p_t = t.logprob.exp()  # 0 where not valid
    on_union = _xlogy(p_t, t.logprob - s_u).sum(1)
    c, outside = t.rest.exp(), t.vocab - t.count
    s_outside = s.sum(1) - torch.where(t.valid, s_u, torch.zeros_like(s_u)).sum(1)
    off_union = torch.where(c > 0, outside * c * t.rest - c * s_outside, torch.zeros_like(c))
    return on_union + off_union


def _reverse_kl_rows(logits: torch.Tensor, temperature: float, t: SparseTargets) -> torch.Tensor:
    s = torch.log_softmax(logits.float() / temperature, dim=-1)
    p_s = s.exp()
    neg_entropy = _xlogy(p_s, s).sum(1)
    p_u = torch.where(t.valid, p_s.gather(1, t.ids), torch.zeros_like(t.logprob))
    on_union = _xlogy(p_u, t.logprob).sum(1)
    outside = torch.where(t.count < t.vocab, (1 - p_u.sum(1)).clamp(min=0), torch.zeros_like(neg_entropy))
    return neg_entropy - on_union - _xlogy(outside, t.rest)


def _jsd_rows(logits: torch.Tensor, temperature: float, t: SparseTargets, beta: float = 0.5) -> torch.Tensor:
    """beta KL(p_t || m) + (1 - beta) KL(p_s || m), m = beta p_t + (1 - beta) p_s."""
    s = torch.log_softmax(logits.float() / temperature, dim=-1)
    log_b, log_1b = math.log(beta), math.log(1 - beta)
    m_off = torch.logaddexp(log_b + t.rest[:, None], log_1b + s)  # log m(v) where p_t(v) = c
    s_u, m_off_u = s.gather(1, t.ids), m_off.gather(1, t.ids)
    m_u = torch.logaddexp(log_b + t.logprob, log_1b + s_u)
    zero = torch.zeros_like(s_u)
    p_t, c = t.logprob.exp(), t.rest.exp()
    outside = t.vocab - t.count
    m_off_outside = m_off.sum(1) - torch.where(t.valid, m_off_u, zero).sum(1)
    kl_t = _xlogy(p_t, t.logprob - m_u).sum(1) + torch.where(c > 0, c * (outside * t.rest - m_off_outside),
                                                              torch.zeros_like(c))
    p_s = s.exp()
    kl_s = (p_s * (s - m_off)).sum(1) + torch.where(t.valid, p_s.gather(1, t.ids) * (m_off_u - m_u), zero).sum(1)
    return beta * kl_t + (1 - beta) * kl_s


def _sampled_kl_rows(logits: torch.Tensor, temperature: float, t: SampledTargets) -> torch.Tensor:
    """sum_j w_j (log p_t(v_j) - s(v_j)) with s(v) = z_v / T - logsumexp(z / T)."""
    z = logits.float() / temperature
    s_drawn = z.gather(1, t.ids) - torch.logsumexp(z, dim=1, keepdim=True)
    return (t.weight * (t.logprob - s_drawn)).sum(1)


# The gradients of the row sums of forward KL and cross-entropy in closed form: with p_s the
# student's softmax at T, q the teacher's value of every token and M = sum_v q(v) (one, up to
# the records' rounding), d/dz sum_rows KL(q || p_s) = (M p_s - q) / T. Computing them directly
# spares the backward a second forward through autograd.

def _forward_kl_grad(logits: torch.Tensor, temperature: float, t: SparseTargets) -> torch.Tensor:
    grad = torch.softmax(logits.float() / temperature, dim=-1)
    c = t.rest.exp()
    on_union = torch.where(t.valid, t.logprob.exp(), torch.zeros_like(t.logprob))
    mass = on_union.sum(1) + c * (t.vocab - t.count)
    grad.mul_(mass[:, None]).sub_(c[:, None])
    grad.scatter_add_(1, t.ids, -torch.where(t.valid, on_union - c[:, None], torch.zeros_like(on_union)))
    return grad.div_(temperature)


def _sampled_kl_grad(logits: torch.Tensor, temperature: float, t: SampledTargets) -> torch.Tensor:
    grad = torch.softmax(logits.float() / temperature, dim=-1).mul_(t.weight.sum(1, keepdim=True))
    return grad.scatter_add_(1, t.ids, -t.weight).div_(temperature)


ROWS: dict[str, Callable[..., torch.Tensor]] = {"kd": _forward_kl_rows, "reverse_kl": _reverse_kl_rows,
                                                 "jsd": _jsd_rows}
SPARSE_TERMS = frozenset(ROWS)  # the terms that read top-k records without a dense teacher tensor


@dataclass
class RowTerm:
    """A loss term that is a sum over rows, `fn(logits[rows], *args, targets[rows])`, times
    `scale` (the batch mean and the temperature's T^2): what `chunked_terms` computes."""

    fn: Callable[..., torch.Tensor]
    args: tuple
    targets: Union["SparseTargets", "SampledTargets", "HardLabels"]
    scale: float
    grad: Optional[Callable[..., torch.Tensor]] = None  # d(sum of fn's rows)/d logits in closed form


def row_term(name: str, logits: torch.Tensor, temperature: float, targets: Union[SparseTargets, SampledTargets],
             **params) -> RowTerm:
    """T^2 * the batch mean of the KD term `name` (kd, reverse_kl, jsd; kd only from sampled
    targets) as a `RowTerm`."""
    fn = ROWS[name]
    if isinstance(targets, SampledTargets):
        if name != "kd":
            raise ValueError(f"distillation term {name!r} needs top-k or dense targets: sampled targets estimate "
                             f"the teacher's distribution, which only the kd term (forward KL) reads linearly")
        fn = _sampled_kl_rows
    grad = {_forward_kl_rows: _forward_kl_grad, _sampled_kl_rows: _sampled_kl_grad}.get(fn)
    return RowTerm(fn, (temperature, *params.values()), targets, temperature ** 2 / logits.shape[0], grad)


def sparse_term(name: str, logits: torch.Tensor, temperature: float, targets: Union[SparseTargets, SampledTargets],
                chunk_rows: Optional[int] = None, **params) -> torch.Tensor:
    """The KD term `name` from sparse targets, in row chunks (`chunked_terms`)."""
    return chunked_terms(logits, [row_term(name, logits, temperature, targets, **params)], chunk_rows)[0]


@dataclass
class HardLabels:
    """The labels [B] of a batch, sliced by rows like the targets above."""

    ids: torch.Tensor


def _cross_entropy_rows(logits: torch.Tensor, temperature: float, t: HardLabels) -> torch.Tensor:
    z = logits.float()
    return torch.logsumexp(z, dim=1) - z.gather(1, t.ids[:, None]).squeeze(1)


def _cross_entropy_grad(logits: torch.Tensor, temperature: float, t: HardLabels) -> torch.Tensor:
    grad = torch.softmax(logits.float(), dim=-1)
    return grad.scatter_add_(1, t.ids[:, None], torch.full_like(grad[:, :1], -1.0))


def cross_entropy_term(logits: torch.Tensor, labels: torch.Tensor) -> RowTerm:
    """The batch mean of -log softmax(z)[y] as a `RowTerm`."""
    return RowTerm(_cross_entropy_rows, (1.0,), HardLabels(labels.long()), 1.0 / logits.shape[0],
                   _cross_entropy_grad)


def chunked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: Optional[int] = None) -> torch.Tensor:
    """Cross-entropy in row chunks, so that no float32 log-softmax of the whole batch is held
    for the backward (F.cross_entropy keeps one: at a 151,936-token vocabulary, 2.5 GB for
    4,096 rows)."""
    return chunked_terms(logits, [cross_entropy_term(logits, labels)], chunk_rows)[0]


def chunked_terms(logits: torch.Tensor, terms: list[RowTerm], chunk_rows: Optional[int] = None) -> torch.Tensor:
    """[P] the values of `terms`, computed together a chunk of rows at a time. The backward
    recomputes each chunk once for all of them and writes its gradient into one buffer of the
    logits' size, so what the terms hold beyond the logits' gradient is one chunk's
    intermediates, however many there are (`_ChunkedRows`)."""
    chunk = chunk_rows or max(1, CHUNK_ELEMENTS // max(logits.shape[1], 1))
    return _ChunkedRows.apply(logits, terms, chunk)


class _ChunkedRows(torch.autograd.Function):
    """[P] the scaled sums over rows of every term, a chunk of rows at a time, in the forward
    without autograd and in the backward once more with it. Slicing the logits inside an
    autograd graph instead would make every chunk's backward spread its gradient over a zero
    tensor of the whole batch's size, and separate functions per term would each return a
    gradient of the logits' size."""

    @staticmethod
    def forward(ctx, logits, terms, chunk):  # noqa: D102 - torch.autograd.Function
        ctx.save_for_backward(logits)
        ctx.terms, ctx.chunk = terms, chunk
        totals = logits.new_zeros(len(terms), dtype=torch.float32)
        for rows in _chunks(len(logits), chunk):
            totals += torch.stack([_call(t, logits[rows], rows).sum() for t in terms])
        return totals * torch.tensor([t.scale for t in terms], device=totals.device)

    @staticmethod
    def backward(ctx, grad_totals):  # noqa: D102
        (logits,) = ctx.saved_tensors
        factors = [float(g) * t.scale for g, t in zip(grad_totals, ctx.terms)]
        grad = torch.empty_like(logits)
        closed_form = all(t.grad is not None for t in ctx.terms)
        for rows in _chunks(len(logits), ctx.chunk):
            if closed_form:
                grad[rows] = sum(f * _call(t, logits[rows], rows, t.grad) for f, t in zip(factors, ctx.terms))
                continue
            with torch.enable_grad():
                part = logits[rows].detach().requires_grad_()
                total = sum(f * _call(t, part, rows).sum() for f, t in zip(factors, ctx.terms) if f)
                if isinstance(total, torch.Tensor):
                    (grad[rows],) = torch.autograd.grad(total, part)
                else:  # no term has a gradient
                    grad[rows] = 0
        return grad, None, None


def _chunks(rows: int, chunk: int) -> list[slice]:
    return [slice(start, start + chunk) for start in range(0, rows, chunk)]


def _call(term: RowTerm, logits: torch.Tensor, rows: slice,
          fn: Optional[Callable[..., torch.Tensor]] = None) -> torch.Tensor:
    """The term's per-row values (or, with `fn`, what `fn` gives) on the rows `rows`
    (`logits` holds those rows only)."""
    targets = term.targets
    part = replace(targets, **{f.name: getattr(targets, f.name)[rows] for f in fields(targets)
                               if isinstance(getattr(targets, f.name), torch.Tensor)})
    temperature, *params = term.args
    return (fn or term.fn)(logits, temperature, part, *params)
