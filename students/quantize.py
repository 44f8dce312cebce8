"""Quantized distillation (plain torch): fake-quantized training, real quantized export, and
post-training quantization as its baseline.

Weights are quantized symmetrically per output channel to `bits` (8 or 4): scale = max|w| /
(2^(bits-1) - 1), q = round(w / scale). During training the student's linear layers see
dequantized weights through a parametrization with a straight-through gradient, so the student
learns weights that survive rounding (quantization-aware training, here against a
full-precision teacher). Embeddings and the (tied) output head stay in full precision, as is
usual for language models. The export holds the integers (int8, or two int4 per byte) and
their float scales, and dequantizes to exactly the weights the student was evaluated with.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

SUPPORTED_BITS = (8, 4)


def _qmax(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"quantize: {bits}-bit weights are not supported; use one of {SUPPORTED_BITS}")
    return 2 ** (bits - 1) - 1


def quantize(weight: torch.Tensor, bits: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes in [-qmax, qmax], float32 scale per channel along `axis`)."""
    qmax = _qmax(bits)
    dims = [d for d in range(weight.dim()) if d != axis]
    scale = weight.detach().abs().amax(dim=dims, keepdim=True).float().clamp(min=1e-12) / qmax
    codes = torch.clamp(torch.round(weight.detach().float() / scale), -qmax, qmax).to(torch.int8)
    return codes, scale.squeeze()


def dequantize(codes: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * codes.dim()
    shape[axis] = -1
    return codes.float() * scale.reshape(shape)


class FakeQuantize(nn.Module):
    """Parametrization: the weight as its quantized values, with a straight-through gradient."""

    def __init__(self, bits: int, axis: int):
        super().__init__()
        _qmax(bits)
        self.bits, self.axis = bits, axis

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        codes, scale = quantize(weight, self.bits, self.axis)
        return weight + (dequantize(codes, scale, self.axis).to(weight.dtype) - weight).detach()


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(name, module, output-channel axis) of every linear layer outside embeddings and the
    output head: torch `Linear` (weight [out, in]) and GPT-2's `Conv1D` (weight [in, out])."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, nn.Linear):
            out.append((name, module, 0))
        elif any(c.__name__ == "Conv1D" for c in type(module).__mro__):  # also once parametrized
            out.append((name, module, 1))
    return out


def fake_quantize_model(model: nn.Module, bits: int) -> int:
    """Train `model` quantization-aware from now on; returns how many layers are quantized."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError(f"quantize: {type(model).__name__} has no linear layers to quantize")
    for _, module, axis in layers:
        parametrize.register_parametrization(module, "weight", FakeQuantize(bits, axis))
    return len(layers)


def post_training_quantized(model: nn.Module, bits: int,
                            part: Callable[[nn.Module], nn.Module] = lambda m: m) -> nn.Module:
    """A copy of a full-precision `model` with the linear weights of `part(copy)` rounded to
    `bits` (post-training quantization)."""
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, axis in quantized_layers(part(quantized)):
            module.weight.copy_(dequantize(*quantize(module.weight, bits, axis), axis))
    return quantized


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a fake-quantized `model` as a plain model's: every quantized weight
    under its own name, holding the quantized values the model computes with."""
    suffix = ".parametrizations.weight.original"
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(suffix):
            layer = key[:-len(suffix)]
            state[f"{layer}.weight"] = model.get_submodule(layer).weight.detach().clone()
        elif ".parametrizations." not in key:
            state[key] = value.detach().clone()
    return state


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int4 codes in [-7, 7] -> uint8, two per byte (low nibble first; odd lengths padded)."""
    flat = (codes.flatten().to(torch.int16) & 0xF).to(torch.uint8)
    if len(flat) % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_int4(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=1).flatten()[:shape.numel()].to(torch.int16)
    return torch.where(nibbles > 7, nibbles - 16, nibbles).to(torch.int8).reshape(shape)


def quantized_state(model: nn.Module, bits: int) -> dict[str, torch.Tensor]:
    """The export of a (fake-)quantized `model`: `<layer>.weight.codes` (int8, or packed int4
    uint8), `<layer>.weight.scale` and `<layer>.weight.shape` per quantized layer; every other
    tensor as is. `dequantized_state` turns it back into a plain state dict."""
    layers = {name: axis for name, _, axis in quantized_layers(model)}
    state = {}
    for key, value in plain_state(model).items():
        layer = key.removesuffix(".weight")
        if key.endswith(".weight") and layer in layers:
            codes, scale = quantize(value, bits, layers[layer])
            state[f"{key}.codes"] = pack_int4(codes) if bits == 4 else codes
            state[f"{key}.scale"] = scale.contiguous()
            state[f"{key}.shape"] = torch.tensor(list(value.shape) + [layers[layer], bits])
        else:
            state[key] = value.detach().clone().contiguous()
    return state


def dequantized_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith(".codes"):
            base = key.removesuffix(".codes")
            *shape, axis, bits = state[f"{base}.shape"].tolist()
            codes = unpack_int4(value, torch.Size(shape)) if bits == 4 else value
            out[base] = dequantize(codes, state[f"{base}.scale"], axis)
        elif not key.endswith((".scale", ".shape")):
            out[key] = value
    return out
