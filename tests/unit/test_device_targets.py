"""Records packed in torch on the teacher's device keep the meaning of the numpy reference
packer (`pack_soft_targets`): same top-k ids, log-probabilities and tail within float
tolerance, draws distributed as the teacher's distribution and fixed per batch id."""

import numpy as np
import pytest
import torch

from teachers.device_targets import DeviceRecord, batch_generator, pack_chunks, row_chunks, top_k
from teachers.soft_targets import check_record_values, pack_soft_targets

META = dict(teacher="t", teacher_version="v1", output_space="tokens:5000:abc")


def _logits(rows: int, classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, classes)) * 3).astype(np.float32)


def _device_record(logits: np.ndarray, batch_id: str = "b0", chunk_rows: int | None = None, **pack):
    tensor = torch.from_numpy(logits)
    chunks = tensor.split(chunk_rows) if chunk_rows else row_chunks(tensor)
    arrays = pack_chunks(chunks, num_classes=logits.shape[1], output_space=META["output_space"],
                         generator=batch_generator(batch_id, torch.device("cpu")), **pack)
    meta = dict(batch_id=batch_id, temperature=pack["temperature"], num_classes=logits.shape[1], **META)
    record = DeviceRecord(meta, arrays).to_host()
    check_record_values(record)
    return record


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_top_k_and_tail_match_the_numpy_packer(temperature):
    logits = _logits(40, 5000)
    pack = dict(temperature=temperature, dense_max_classes=1024, top_k=16)
    ours = _device_record(logits, chunk_rows=7, **pack)
    reference = pack_soft_targets(logits, batch_id="b0", **META, **pack)
    assert ours.kind == reference.kind == "topk"
    assert ours.topk_idx.dtype == np.int32 and ours.topk_logprob.dtype == np.float16
    assert ours.tail_logprob.dtype == np.float32
    np.testing.assert_array_equal(ours.topk_idx, reference.topk_idx)
    np.testing.assert_allclose(ours.topk_logprob.astype(np.float32), reference.topk_logprob.astype(np.float32),
                               atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(ours.tail_logprob, reference.tail_logprob, atol=1e-4, rtol=1e-4)


def test_dense_rows_match_and_chunking_changes_nothing():
    logits = _logits(30, 100, seed=1)
    pack = dict(temperature=1.5, dense_max_classes=1024, top_k=8)
    whole, chunked = _device_record(logits, **pack), _device_record(logits, chunk_rows=4, **pack)
    reference = pack_soft_targets(logits, batch_id="b0", **META, **pack)
    assert whole.kind == "dense"
    np.testing.assert_allclose(whole.logprob, reference.logprob, atol=1e-5)
    np.testing.assert_array_equal(whole.logprob, chunked.logprob)


def test_half_precision_logits_are_packed_in_float32_per_chunk():
    logits = _logits(12, 3000, seed=2)
    pack = dict(temperature=1.0, dense_max_classes=16, top_k=8, target_kind="topk")
    tensor = torch.from_numpy(logits).to(torch.bfloat16)
    arrays = pack_chunks(tensor.split(5), num_classes=3000, output_space="tokens:3000:x", **pack)
    reference = pack_soft_targets(tensor.float().numpy(), batch_id="b", **META, **pack)
    # bf16 logits tie often: the same top-k values, whichever of two tied ids comes first
    np.testing.assert_array_equal(arrays["topk_logprob"].numpy(), reference.topk_logprob)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_draws_follow_the_distribution_and_are_fixed_per_batch_id(temperature):
    base = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005]))
    logits = np.tile((base * temperature).astype(np.float32), (500, 1))
    probs = np.exp(base)  # softmax(logits / T)
    pack = dict(temperature=temperature, dense_max_classes=4, top_k=8, target_kind="sampled")
    record = _device_record(logits, batch_id="run/e0/b3", chunk_rows=128, **pack)
    assert record.kind == "sampled" and record.topk_idx.shape == (500, 8)
    assert np.all(np.diff(record.topk_idx, axis=1) >= 0)  # sorted within a row, like the numpy packer
    np.testing.assert_allclose(record.sample_weight.astype(np.float32), 1 / 8)
    np.testing.assert_allclose(record.topk_logprob.astype(np.float32), np.log(probs)[record.topk_idx], atol=2e-3)
    counts = np.bincount(record.topk_idx.ravel(), minlength=8)
    expected = probs * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3  # the 0.999 quantile of chi-square with 7 degrees of freedom
    again = _device_record(logits, batch_id="run/e0/b3", chunk_rows=128, **pack)
    other = _device_record(logits, batch_id="run/e0/b4", chunk_rows=128, **pack)
    np.testing.assert_array_equal(record.topk_idx, again.topk_idx)
    assert not np.array_equal(record.topk_idx, other.topk_idx)


def test_embeddings_travel_raw_and_an_empty_batch_has_the_kinds_arrays():
    out = np.random.default_rng(3).standard_normal((5, 12)).astype(np.float32)
    arrays = pack_chunks(row_chunks(torch.from_numpy(out)), num_classes=12, output_space="embedding:12",
                         temperature=2.0, dense_max_classes=1024, top_k=4)
    np.testing.assert_array_equal(arrays["logits"].numpy(), out)
    for kind, second in (("topk", "tail_logprob"), ("sampled", "sample_weight")):
        empty = pack_chunks([], num_classes=5000, output_space="tokens:5000:x", temperature=1.0,
                            dense_max_classes=16, top_k=8, target_kind=kind)
        assert empty["topk_idx"].shape == (0, 8) and second in empty
    with pytest.raises(ValueError, match="target kind 'nucleus' is unknown"):
        pack_chunks([], num_classes=5000, output_space="tokens:5000:x", temperature=1.0, dense_max_classes=16,
                    top_k=8, target_kind="nucleus")


@pytest.mark.parametrize("width, k", [(49_152, 64), (151_936, 16), (50_257, 64), (4096, 64)])
def test_blockwise_top_k_is_torch_top_k(width, k):
    z = torch.randn(9, width, generator=torch.Generator().manual_seed(width)) * 4
    z[3, 1000:1000 + 3 * k] += 30.0  # one row's top k crowded into few blocks
    z[4, -5:] += 30.0  # another's among the last columns, which fill no block
    top, idx = top_k(z, k)
    sliced = torch.cat([z, z[:, :70]], dim=1)[:, :width]  # a head sliced to the vocabulary: rows not contiguous
    torch.testing.assert_close(top_k(sliced, k)[1], idx)
    expected, expected_idx = z.topk(k, dim=-1)
    torch.testing.assert_close(top, expected)
    torch.testing.assert_close(idx, expected_idx)
