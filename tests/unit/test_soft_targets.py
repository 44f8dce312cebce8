"""Soft-target validation: every bad record is refused with the teacher and batch named."""

import numpy as np
import pytest

from ingest import BatchId
from teachers.errors import SoftTargetError
from teachers.soft_targets import pack_soft_targets, validate_soft_targets


def good(dense=True, **overrides):
    logits = np.random.default_rng(0).normal(size=(4, 10 if dense else 100)).astype(np.float32)
    rec = pack_soft_targets(logits, batch_id="e0-s1-b2", teacher="cnn", teacher_version="abc", temperature=4.0,
                            output_space=f"classes:{logits.shape[1]}", dense_max_classes=10, top_k=8)
    for key, value in overrides.items():
        setattr(rec, key, value)
    return rec


def check(rec, **kw):
    args = dict(batch_id=BatchId.parse("e0-s1-b2"), batch_size=4, output_space=f"classes:{rec.num_classes}",
                temperature=4.0,
                teacher_version="abc")
    args.update(kw)
    return validate_soft_targets(rec, **args)


def test_good_records_pass():
    assert check(good()).is_dense
    assert not check(good(dense=False)).is_dense


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.logprob.__setitem__((0, 0), np.nan), "NaN or Inf"),
    (lambda r: r.logprob.__setitem__((1, 3), np.inf), "NaN or Inf"),
    (lambda r: setattr(r, "logprob", r.logprob[:3]), "shape"),
    (lambda r: setattr(r, "logprob", r.logprob.astype(np.int64)), "dtype"),
    (lambda r: setattr(r, "logprob", r.logprob * 4.0), r"row \d's probabilities sum to .*, not 1: dense records carry "
                                                       r"log-probabilities at the record's temperature"),
    (lambda r: setattr(r, "logits", r.logprob.copy()), "a dense distribution .* or an embedding .*, not both"),
    (lambda r: setattr(r, "batch_id", "e0-s1-b3"), "answers batch"),
    (lambda r: setattr(r, "output_space", "classes:12"), "output space"),
    (lambda r: setattr(r, "teacher_version", "zzz"), "version changed"),
    (lambda r: setattr(r, "temperature", 2.0), "temperature"),
    (lambda r: setattr(r, "schema_version", 99), "schema version"),
])
def test_bad_dense_records_are_refused(mutate, message):
    rec = good()
    mutate(rec)
    with pytest.raises(SoftTargetError, match=message) as err:
        check(rec, output_space="classes:10")
    assert "'cnn'" in str(err.value) and "e0-s1-b2" in str(err.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.topk_idx.__setitem__((0, 0), 100), "outside"),
    (lambda r: r.topk_idx.__setitem__((0, 0), -1), "outside"),
    (lambda r: r.topk_idx.__setitem__((0, 1), r.topk_idx[0, 0]), "row 0 repeats a token id"),
    (lambda r: r.topk_logprob.__setitem__((0, 0), np.nan), "NaN or Inf"),
    (lambda r: setattr(r, "tail_logprob", r.tail_logprob + 1.0), "tail mass of .* lies in \\[0, 1\\)"),
    (lambda r: setattr(r, "tail_logprob", r.tail_logprob - 3.0), "sum to"),
    (lambda r: setattr(r, "topk_idx", r.topk_idx.astype(np.float32)), "dtypes"),
    (lambda r: setattr(r, "tail_logprob", r.tail_logprob[:2]), "shapes"),
    (lambda r: setattr(r, "tail_logprob", None), "needs"),
])
def test_bad_topk_records_are_refused(mutate, message):
    rec = good(dense=False)
    mutate(rec)
    with pytest.raises(SoftTargetError, match=message):
        check(rec)


def test_something_that_is_not_a_record_is_refused():
    with pytest.raises(SoftTargetError, match="expected a SoftTargets"):
        validate_soft_targets({"logits": 1}, batch_id="b", batch_size=1, output_space="classes:10", temperature=1.0)


def test_every_kind_carries_the_distribution_at_the_records_temperature():
    """Dense, top-k and sampled records of the same logits agree on log p(T) wherever they
    overlap; no consumer divides by T again."""
    logits = np.random.default_rng(3).normal(scale=3.0, size=(4, 40)).astype(np.float32)
    pack = dict(batch_id="b", teacher="t", teacher_version="v", temperature=2.5, output_space="classes:40", top_k=6)
    dense = pack_soft_targets(logits, dense_max_classes=40, **pack)
    topk = pack_soft_targets(logits, dense_max_classes=1, **pack)
    sampled = pack_soft_targets(logits, dense_max_classes=1, target_kind="sampled", **pack)
    z = logits / 2.5
    expected = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    np.testing.assert_allclose(dense.logprob, expected, atol=1e-5)
    for record in (topk, sampled):
        np.testing.assert_allclose(record.topk_logprob, np.take_along_axis(expected, record.topk_idx, 1), atol=5e-3)
    assert [r.kind for r in (dense, topk, sampled)] == ["dense", "topk", "sampled"]
    embedding = pack_soft_targets(logits, dense_max_classes=1, **{**pack, "output_space": "embedding:40"})
    assert embedding.kind == "embedding" and np.array_equal(embedding.logits, logits)  # no temperature
