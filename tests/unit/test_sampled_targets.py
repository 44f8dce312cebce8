"""Sampled soft targets (`teachers.soft_targets`, `students.sparse_kd`): the draws follow the
teacher's distribution, the kd estimate and its gradient are unbiased against the dense KL
(checked in numpy over many draws), records survive the Arrow codec, and bad records and
configurations are refused with what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ingest import BatchId
from students.losses import CompositeLoss, Term
from students.weighting import Weighting
from teachers import TeacherTargets
from teachers.arrow_codec import decode, encode
from teachers.errors import SoftTargetError
from teachers.soft_targets import pack_soft_targets, validate_soft_targets

V, B, T = 23, 6, 2.0


def _logits(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(B, V)).astype(np.float32)


def _record(logits: np.ndarray, k: int, batch_id: str = "b0", teacher: str = "a", kind: str = "sampled"):
    return pack_soft_targets(logits, batch_id=batch_id, teacher=teacher, teacher_version="1", temperature=T,
                             output_space=f"classes:{V}", dense_max_classes=0, top_k=k, target_kind=kind)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_draws_follow_the_teachers_distribution_at_the_temperature():
    logits = _logits(0)
    counts = np.zeros((B, V))
    for i in range(400):
        record = _record(logits, 16, batch_id=f"b{i}")
        assert record.kind == "sampled" and record.topk_idx.shape == (B, 16) and record.tail_logprob is None
        np.add.at(counts, (np.arange(B)[:, None], record.topk_idx), record.sample_weight.astype(np.float64))
        lp = _log_softmax(logits.astype(np.float64) / T)
        np.testing.assert_allclose(record.topk_logprob, np.take_along_axis(lp, record.topk_idx, 1), atol=2e-3)
    np.testing.assert_allclose(counts / 400, np.exp(_log_softmax(logits.astype(np.float64) / T)), atol=0.02)


def test_draws_are_reproducible_per_batch_id_and_differ_between_batches():
    logits = _logits(1)
    first, again, other = _record(logits, 8, "x"), _record(logits, 8, "x"), _record(logits, 8, "y")
    np.testing.assert_array_equal(first.topk_idx, again.topk_idx)
    assert not np.array_equal(first.topk_idx, other.topk_idx)


def _kd_and_grad(student: np.ndarray, records: dict, weights: dict, strategy: str = "static"):
    logits = torch.tensor(student, requires_grad=True)
    loss = CompositeLoss([Term("kd")], T, Weighting(strategy))
    value = loss(logits, torch.zeros(B, dtype=torch.long), TeacherTargets(records, dict(weights)))["kd"]
    value.backward()
    return float(value.detach()), logits.grad.numpy().astype(np.float64)


def test_kd_from_sampled_targets_is_unbiased_for_value_and_gradient_with_two_teachers():
    """The mean over many draws of the estimate equals sum_i w_i KL(p_i || p_s) (its gradient the
    gradient of the KL to the mixture), computed densely in numpy."""
    student, teachers, weights = _logits(10), {"a": _logits(11), "b": _logits(12)}, {"a": 0.7, "b": 0.3}
    s = _log_softmax(student.astype(np.float64) / T)
    p = {n: np.exp(_log_softmax(z.astype(np.float64) / T)) for n, z in teachers.items()}
    expected = sum(w * (p[n] * (np.log(p[n]) - s)).sum(1).mean() for n, w in weights.items()) * T**2
    mixture = sum(w * p[n] for n, w in weights.items())
    expected_grad = (np.exp(s) - mixture) * T / B  # d/dz of T^2 * mean KL: T (p_s - p_t) / B
    draws = 600
    values, grads = [], []
    for i in range(draws):
        records = {n: _record(z, 8, batch_id=f"b{i}", teacher=n) for n, z in teachers.items()}
        value, grad = _kd_and_grad(student, records, weights)
        values.append(value)
        grads.append(grad)
    assert abs(np.mean(values) - expected) < 4 * np.std(values) / np.sqrt(draws) + 1e-3
    np.testing.assert_allclose(np.mean(grads, axis=0), expected_grad, atol=4 * np.std(grads, axis=0).max()
                               / np.sqrt(draws) + 1e-4)


def test_sampled_records_pass_the_arrow_codec_unchanged():
    record = _record(_logits(3), 12)
    back = decode(encode(record))
    assert back.kind == "sampled"
    for name in ("topk_idx", "topk_logprob", "sample_weight"):
        np.testing.assert_array_equal(getattr(back, name), getattr(record, name))


def _validate(record, kind="sampled"):
    return validate_soft_targets(record, batch_id=BatchId.parse("b0"), batch_size=B, output_space=f"classes:{V}",
                                 temperature=T,
                                 target_kind=kind)


@pytest.mark.parametrize("weight, message", [(0.0, "weights must be finite and > 0"),
                                             (-0.5, "weights must be finite and > 0"),
                                             (np.inf, "NaN or Inf")])
def test_bad_importance_weights_are_refused_naming_teacher_and_batch(weight, message):
    record = _record(_logits(4), 8)
    record.sample_weight = record.sample_weight.copy()
    record.sample_weight[2, 3] = weight
    with pytest.raises(SoftTargetError, match=rf"teacher 'a'.*batch 'b0'.*{message}"):
        _validate(record)


def test_a_record_of_another_kind_than_asked_is_refused():
    with pytest.raises(SoftTargetError, match="sent topk targets where sampled were asked"):
        _validate(_record(_logits(5), 8, kind="topk"))
    with pytest.raises(SoftTargetError, match="sent sampled targets where topk were asked"):
        _validate(_record(_logits(5), 8), kind="topk")


def test_terms_and_weightings_that_need_the_whole_distribution_are_refused():
    records = {"a": _record(_logits(6), 8)}
    logits = torch.tensor(_logits(7), requires_grad=True)
    with pytest.raises(ValueError, match="'reverse_kl' needs top-k or dense targets"):
        CompositeLoss([Term("reverse_kl")], T)(logits, torch.zeros(B, dtype=torch.long),
                                               TeacherTargets(records, {"a": 1.0}))
    with pytest.raises(ValueError, match="weighting strategy 'confidence'.*use static or route"):
        _kd_and_grad(_logits(7), records, {"a": 1.0}, strategy="confidence")
