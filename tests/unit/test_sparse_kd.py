"""KD from top-k records without a dense teacher tensor (`students.sparse_kd`), checked against
an independent numpy implementation of the dense formula: several teachers with different k,
every weighting strategy that applies, the terms kd, reverse_kl and jsd, gradients, and row
chunks recomputed under checkpointing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from students.losses import CompositeLoss, Term
from students.sparse_kd import SparseTeacher, chunked_cross_entropy, merge_sparse, sparse_term
from students.teacher_merge import stacked_logprob
from students.weighting import Weighting
from teachers import TeacherTargets
from teachers.soft_targets import pack_soft_targets

V, B, T = 37, 12, 2.0
STATIC = {"a": 0.5, "b": 0.3, "c": 0.2}
TOP_K = {"a": 5, "b": 9, "c": 3}


def _targets(seed: int = 0) -> TeacherTargets:
    rng = np.random.default_rng(seed)
    records = {name: pack_soft_targets(rng.normal(scale=3.0, size=(B, V)), batch_id="b0", teacher=name,
                                       teacher_version="1", temperature=T, output_space=f"classes:{V}",
                                       dense_max_classes=0, top_k=k) for name, k in TOP_K.items()}
    return TeacherTargets(records, dict(STATIC))


def _dense(record) -> np.ndarray:
    """[B, V] the record's distribution: its top k, the tail spread over the other tokens."""
    k = record.topk_idx.shape[1]
    out = np.repeat((record.tail_logprob.astype(np.float64) - np.log(V - k))[:, None], V, axis=1)
    np.put_along_axis(out, record.topk_idx.astype(np.int64), record.topk_logprob.astype(np.float64), axis=1)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _weights(strategy: str, lp: np.ndarray, labels: np.ndarray, gate: np.ndarray, task: np.ndarray) -> np.ndarray:
    """[B, N] as `students.weighting` documents each strategy (sharpness 1)."""
    log_s = np.log(np.array(list(STATIC.values())))
    p = np.exp(lp)
    if strategy == "static":
        return np.repeat(np.exp(log_s)[None], B, axis=0)
    if strategy == "confidence":
        return _softmax(log_s + lp.max(-1).T)
    if strategy == "entropy":
        return _softmax(log_s + (p * lp).sum(-1).T)
    if strategy in ("label_agreement",):
        return _softmax(log_s + lp[:, np.arange(B), labels].T)
    if strategy == "gating":
        return _softmax(log_s + gate)
    routes = {0: 0, 1: 2}  # route: task 0 to a, task 1 to c
    return np.stack([np.eye(3)[routes[t]] for t in task])


def _kl(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    p = np.exp(p_log)
    return np.where(p > 0, p * (p_log - q_log), 0.0).sum(-1)


def _reference(term: str, z: np.ndarray, targets: TeacherTargets, weights: np.ndarray) -> float:
    lp = np.stack([_dense(r) for r in targets.records.values()])  # [N, B, V]
    mixed = np.log(np.einsum("bn,nbv->bv", weights, np.exp(lp)))
    zs = z.astype(np.float64) / T
    s = zs - np.log(np.exp(zs - zs.max(1, keepdims=True)).sum(1, keepdims=True)) - zs.max(1, keepdims=True)
    if term == "kd":
        value = _kl(mixed, s)
    elif term == "reverse_kl":
        value = _kl(s, mixed)
    else:
        m = np.log(0.5 * np.exp(mixed) + 0.5 * np.exp(s))
        value = 0.5 * _kl(mixed, m) + 0.5 * _kl(s, m)
    return float(value.mean() * T ** 2)


@pytest.mark.parametrize("strategy", ["static", "confidence", "entropy", "label_agreement", "gating", "route"])
@pytest.mark.parametrize("term", ["kd", "reverse_kl", "jsd"])
def test_sparse_terms_equal_the_dense_formula_for_every_weighting(strategy, term):
    targets = _targets()
    rng = np.random.default_rng(1)
    z = rng.normal(scale=2.0, size=(B, V)).astype(np.float32)
    labels = rng.integers(0, V, B)
    gate = rng.normal(size=(B, 3)).astype(np.float32)
    task = rng.integers(0, 2, B)
    weighting = Weighting(strategy, gate_teachers=("a", "b", "c") if strategy == "gating" else (),
                          column="task" if strategy == "route" else None, routes={"0": "a", "1": "c"})
    loss = CompositeLoss([Term(term)], T, weighting, num_classes=V)
    logits = torch.from_numpy(z).requires_grad_()
    out = loss(logits, torch.from_numpy(labels), targets, gate_logits=torch.from_numpy(gate), columns={"task": task})
    lp = np.stack([_dense(r) for r in targets.records.values()])
    expected = _reference(term, z, targets, _weights(strategy, lp, labels, gate, task))
    assert out[term].item() == pytest.approx(expected, rel=1e-5)
    out["total"].backward()
    assert torch.isfinite(logits.grad).all()


def test_sparse_gradients_equal_the_dense_path_and_chunks_change_nothing():
    targets = _targets(seed=3)
    z = torch.randn(B, V, generator=torch.Generator().manual_seed(4)) * 2
    weights = torch.tensor([list(STATIC.values())] * B)
    teachers = [SparseTeacher.of(torch.from_numpy(r.topk_idx), torch.from_numpy(r.topk_logprob.astype(np.float32)),
                                 torch.from_numpy(r.tail_logprob), V) for r in targets.records.values()]
    merged = merge_sparse(teachers, weights, V)
    dense_teacher = torch.logsumexp(torch.log(weights.T)[:, :, None] + stacked_logprob(targets, T), dim=0)
    for term in ("kd", "reverse_kl", "jsd"):
        whole, chunked, dense = (z.clone().requires_grad_() for _ in range(3))
        sparse_term(term, whole, T, merged).backward()
        sparse_term(term, chunked, T, merged, chunk_rows=5).backward()  # 3 chunks, each recomputed in backward
        s = torch.log_softmax(dense / T, -1)
        if term == "kd":
            value = (dense_teacher.exp() * (dense_teacher - s)).sum(-1)
        elif term == "reverse_kl":
            value = (s.exp() * (s - dense_teacher)).sum(-1)
        else:
            m = torch.logaddexp(dense_teacher, s) - np.log(2)
            value = 0.5 * (dense_teacher.exp() * (dense_teacher - m)).sum(-1) + 0.5 * (s.exp() * (s - m)).sum(-1)
        (value.mean() * T ** 2).backward()
        torch.testing.assert_close(whole.grad, dense.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(chunked.grad, whole.grad, rtol=1e-5, atol=1e-7)


def test_a_repeated_token_counts_once_and_a_full_vocabulary_has_no_tail():
    ids = torch.tensor([[0, 1, 2, 3]])
    full = SparseTeacher.of(ids, torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])), torch.tensor([-30.0]), vocab=4)
    half = SparseTeacher.of(torch.tensor([[2, 0]]), torch.log(torch.tensor([[0.5, 0.25]])), torch.log(torch.tensor([0.25])),
                            vocab=4)
    merged = merge_sparse([full, half], torch.tensor([[0.5, 0.5]]), vocab=4)
    assert merged.count.item() == 4  # token 0 and 2 from both teachers, once each: no token is left outside
    dense = torch.log(0.5 * torch.tensor([0.4, 0.3, 0.2, 0.1]) + 0.5 * torch.tensor([0.25, 0.125, 0.5, 0.125]))
    torch.testing.assert_close(merged.logprob[merged.valid], dense)
    z = torch.randn(1, 4)
    s = torch.log_softmax(z, -1)
    assert sparse_term("reverse_kl", z, 1.0, merged).item() == pytest.approx((s.exp() * (s - dense)).sum().item(),
                                                                           rel=1e-5)


def test_chunked_cross_entropy_equals_torchs_in_value_and_gradient():
    z = torch.randn(B, V, generator=torch.Generator().manual_seed(5)) * 3
    labels = torch.randint(0, V, (B,), generator=torch.Generator().manual_seed(6))
    reference, chunked = z.clone().requires_grad_(), z.clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(reference, labels)
    expected.backward()
    value = chunked_cross_entropy(chunked, labels, chunk_rows=5)
    value.backward()
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked.grad, reference.grad, rtol=1e-5, atol=1e-7)


def test_terms_in_row_chunks_computed_together_equal_each_computed_alone(monkeypatch):
    """ce and the sparse KD terms share one pass over the chunks (one gradient buffer): the same
    values and gradient as each term on its own."""
    from students.kd_terms import TermInputs, fuse_row_terms
    from students.sparse_kd import chunked_terms, cross_entropy_term, row_term

    targets = _targets(seed=7)
    z = torch.randn(B, V, generator=torch.Generator().manual_seed(8)) * 2
    labels = torch.randint(0, V, (B,), generator=torch.Generator().manual_seed(9))
    teachers = [SparseTeacher.of(torch.from_numpy(r.topk_idx), torch.from_numpy(r.topk_logprob.astype(np.float32)),
                                 torch.from_numpy(r.tail_logprob), V) for r in targets.records.values()]
    merged = merge_sparse(teachers, torch.tensor([list(STATIC.values())] * B), V)
    together, alone = z.clone().requires_grad_(), z.clone().requires_grad_()
    values = chunked_terms(together, [cross_entropy_term(together, labels), row_term("kd", together, T, merged),
                                      row_term("jsd", together, T, merged, beta=0.3)], chunk_rows=5)
    (0.2 * values[0] + 0.5 * values[1] + 0.3 * values[2]).backward()
    separate = [chunked_cross_entropy(alone, labels, chunk_rows=4), sparse_term("kd", alone, T, merged),
                sparse_term("jsd", alone, T, merged, beta=0.3)]
    (0.2 * separate[0] + 0.5 * separate[1] + 0.3 * separate[2]).backward()
    torch.testing.assert_close(values, torch.stack(separate).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together.grad, alone.grad, rtol=1e-5, atol=1e-7)
    closed, autograd = z.clone().requires_grad_(), z.clone().requires_grad_()  # ce + kd: gradients in closed form
    pair = chunked_terms(closed, [cross_entropy_term(closed, labels), row_term("kd", closed, T, merged)], chunk_rows=5)
    (0.4 * pair[0] + 0.6 * pair[1]).backward()
    s = torch.log_softmax(autograd / T, -1)
    p_t = torch.logsumexp(torch.log(torch.tensor([list(STATIC.values())] * B)).T[:, :, None]
                          + stacked_logprob(targets, T), dim=0)
    reference = 0.4 * torch.nn.functional.cross_entropy(autograd, labels) + 0.6 * (
        (p_t.exp() * (p_t - s)).sum(-1).mean() * T ** 2)
    reference.backward()
    torch.testing.assert_close(closed.grad, autograd.grad, rtol=1e-4, atol=1e-6)
    inputs = TermInputs(z, labels, T, teacher_sparse=merged)
    fuse_row_terms(inputs, [("ce", {}), ("kd", {})])
    assert inputs.fused == {}  # ce runs in chunks only past one chunk of logits: kd alone is not fused
    monkeypatch.setattr("students.kd_terms.CHUNK_ELEMENTS", 64)
    fuse_row_terms(inputs, [("ce", {}), ("kd", {})])
    torch.testing.assert_close(torch.stack([inputs.fused["ce"], inputs.fused["kd"]]), torch.stack(separate[:2]).detach(),
                               rtol=1e-5, atol=1e-6)
