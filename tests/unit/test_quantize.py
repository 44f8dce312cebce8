"""Quantized distillation: per-channel fake quantization with a straight-through gradient,
the exported integers (int8, packed int4) and post-training quantization."""

import numpy as np
import pytest
import torch

from ingest.lm_data import DEFAULT_TOKENIZER
from ingest.token_layout import CONTEXT, TARGET, pack, padded
from students.quantize import (dequantize, dequantized_state, fake_quantize_model, pack_int4, plain_state,
                               post_training_quantized, quantize, quantized_layers, quantized_state, unpack_int4)
from models.hf_lm import causal_lm

TINY = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 24}


def _lm():
    torch.manual_seed(0)
    return causal_lm(24, 1024, DEFAULT_TOKENIZER, config=TINY).eval()


@pytest.mark.parametrize("bits", [8, 4])
def test_per_channel_rounding_keeps_each_channel_within_half_a_step(bits):
    weight = torch.randn(6, 10) * torch.arange(1, 7)[:, None]  # channels of very different ranges
    codes, scale = quantize(weight, bits, axis=0)
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == torch.int8 and int(codes.abs().max()) == qmax and scale.shape == (6,)
    error = (dequantize(codes, scale, 0) - weight).abs()
    assert bool((error <= scale[:, None] / 2 + 1e-6).all())
    with pytest.raises(ValueError, match="use one of"):
        quantize(weight, 3, axis=0)


def test_int4_codes_pack_two_per_byte():
    codes = torch.tensor([[-7, 7, 0], [3, -1, 5]], dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 3
    assert torch.equal(unpack_int4(packed, codes.shape), codes)


def test_fake_quantized_student_trains_and_exports_exactly_what_it_computes_with():
    model = _lm()
    layers = fake_quantize_model(model.lm, 4)
    assert layers == len(quantized_layers(model.lm)) == 4  # attention and MLP of the block; not embeddings/head
    ids = torch.from_numpy(padded([np.concatenate([pack([1, 40], CONTEXT), pack([50, 60, 70, 3], TARGET)])], 8))
    model(ids).sum().backward()
    original = model.lm.transformer.h[0].mlp.c_fc.parametrizations.weight.original
    assert original.grad is not None and original.grad.abs().sum() > 0  # straight-through gradient
    fresh = _lm()
    fresh.lm.load_state_dict(dequantized_state(quantized_state(model.lm, 4)))
    with torch.no_grad():
        assert torch.allclose(model(ids), fresh(ids), atol=1e-5)
        assert torch.allclose(fresh.lm.transformer.wte.weight, model.lm.transformer.wte.weight)  # full precision
    assert set(plain_state(model.lm)) == set(fresh.lm.state_dict())


def test_post_training_quantization_rounds_a_copy_only():
    model = _lm()
    before = model.lm.transformer.h[0].attn.c_attn.weight.clone()
    ptq = post_training_quantized(model, 8, lambda m: m.lm)
    assert torch.equal(model.lm.transformer.h[0].attn.c_attn.weight, before)
    rounded = ptq.lm.transformer.h[0].attn.c_attn.weight
    assert not torch.equal(rounded, before) and torch.allclose(rounded, before, atol=float(before.abs().max()) / 100)
    assert torch.equal(ptq.lm.lm_head.weight, model.lm.lm_head.weight)
