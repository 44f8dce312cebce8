"""Losses and teacher merging against formulas written independently in numpy."""

import numpy as np
import pytest
import torch

from students.losses import LOSSES, hinton_kd, logit_mse
from teachers.soft_targets import pack_soft_targets
from students.teacher_merge import merge_teachers, merged_logits, record_logprob, stacked_logprob, static_weights
from students.weighting import Weighting
from teachers.targets import TeacherTargets


def np_softmax(z, t=1.0):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def record(logits, teacher="t", t=4.0, dense_max=1024, k=64, batch_id="b0"):
    return pack_soft_targets(np.asarray(logits, np.float32), batch_id=batch_id, teacher=teacher,
                             teacher_version="v1", temperature=t, output_space=f"classes:{np.shape(logits)[-1]}",
                             dense_max_classes=dense_max, top_k=k)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32) * 3, \
        rng.integers(0, 7, size=5)


def test_hinton_kd_matches_numpy(batch):
    s, t, y = batch
    alpha, temp = 0.3, 4.0
    p = np_softmax(t, temp)
    q = np_softmax(s, temp)
    kl = (p * (np.log(p) - np.log(q))).sum(-1).mean()
    ce = -np.log(np_softmax(s)[np.arange(5), y]).mean()
    expected = alpha * ce + (1 - alpha) * temp**2 * kl
    out = hinton_kd(torch.from_numpy(s), torch.from_numpy(y), TeacherTargets({"t": record(t)}, {"t": 1.0}),
                    alpha=alpha, temperature=temp)
    assert out["total"].item() == pytest.approx(expected, rel=1e-5)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["kd"].item() == pytest.approx(temp**2 * kl, rel=1e-5)


def test_logit_mse_matches_numpy(batch):
    s, t, y = batch
    ce = -np.log(np_softmax(s)[np.arange(5), y]).mean()
    centred = lambda z: z - z.mean(-1, keepdims=True)  # noqa: E731 - softmax ignores a shift per row
    expected = 0.5 * ce + 0.5 * ((centred(s) - centred(t)) ** 2).mean()
    out = logit_mse(torch.from_numpy(s), torch.from_numpy(y), TeacherTargets({"t": record(t)}, {"t": 1.0}),
                    alpha=0.5, temperature=4.0)
    assert out["total"].item() == pytest.approx(expected, rel=1e-5)


def test_without_teachers_kd_is_plain_cross_entropy(batch):
    s, _, y = batch
    kd = hinton_kd(torch.from_numpy(s), torch.from_numpy(y), None, alpha=0.3, temperature=4.0)
    ce = LOSSES.get("ce")(torch.from_numpy(s), torch.from_numpy(y))
    assert kd["total"].item() == pytest.approx(ce["total"].item())


def test_multi_teacher_merge_is_weighted_mixture_of_probabilities(batch):
    s, t, _ = batch
    t2 = t[:, ::-1].copy()
    merged = TeacherTargets({"a": record(t, "a"), "b": record(t2, "b")}, {"a": 3.0, "b": 1.0})
    expected = 0.75 * np_softmax(t, 4.0) + 0.25 * np_softmax(t2, 4.0)
    static = merge_teachers(Weighting(), merged.names, stacked_logprob(merged, 4.0), static_weights(merged),
                            torch.zeros(len(t), dtype=torch.long))
    np.testing.assert_allclose(static.logprob.exp().numpy(), expected, rtol=1e-5)
    centred = lambda z: z - z.mean(-1, keepdims=True)  # noqa: E731 - records hold logits up to a shift per row
    np.testing.assert_allclose(merged_logits(merged).numpy(), 0.75 * centred(t) + 0.25 * centred(t2), rtol=1e-4, atol=1e-5)


def test_topk_record_spreads_tail_mass_evenly():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 50)).astype(np.float32) * 2
    rec = record(logits, dense_max=10, k=8, t=2.0)
    assert not rec.is_dense and rec.topk_idx.shape == (3, 8)
    full = np_softmax(logits, 2.0)
    approx = record_logprob(rec, 2.0).exp().numpy()
    np.testing.assert_allclose(approx.sum(-1), 1.0, atol=2e-3)
    rows = np.arange(3)[:, None]
    np.testing.assert_allclose(approx[rows, rec.topk_idx], full[rows, rec.topk_idx], rtol=2e-3)
    tail = 1 - np.take_along_axis(full, rec.topk_idx.astype(int), -1).sum(-1)
    mask = np.ones_like(full, bool)
    mask[rows, rec.topk_idx] = False
    np.testing.assert_allclose(approx[mask].reshape(3, -1), np.repeat(tail[:, None] / 42, 42, 1), rtol=5e-3)


def test_logit_matching_refuses_topk_targets():
    rec = record(np.zeros((2, 20), np.float32), dense_max=10, k=4)
    with pytest.raises(ValueError, match="dense logits"):
        merged_logits(TeacherTargets({"t": rec}, {"t": 1.0}))


def test_weights_must_not_all_be_zero(batch):
    with pytest.raises(ValueError, match="sum to 0"):
        TeacherTargets({"t": record(batch[1])}, {"t": 0.0})
