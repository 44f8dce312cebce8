"""Export the trained student of a phase when it ends (plain torch + DeepSpeed).

Every rank calls `export_student`; under ZeRO-3 the ranks gather the sharded parameters
together (a collective), and rank 0 writes the phase's folder (`<run>/students/<phase>`):
- a language model in Hugging Face layout (`model.safetensors`, `config.json`, the
  tokenizer), so it loads again with `models.hf_lm:causal_lm(path=<folder>)` (as a teacher of
  a later run) or with `transformers.AutoModelForCausalLM.from_pretrained(<folder>)`;
- any other student as `model.safetensors`, loadable into the config's `student.model`.
`distillery export` reads these folders, so every finished phase stays exportable however
many checkpoints later phases rotated away.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import torch

from cluster import local_folder_for


def gathered(engine: Any, zero_stage: int):
    """A context in which the student's full parameters are present on every rank."""
    if zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.model.parameters()), modifier_rank=None)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def quantization_target(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose linear layers quantized distillation rounds: a language model's
    transformer (`CausalLM.lm`), else the student itself."""
    return getattr(model, "lm", model)


def export_student(engine: Any, zero_stage: int, folder: Optional[str], tokenizer: str, rank: int,
                   quantize_bits: Optional[int] = None) -> dict[str, Any]:
    """Write the student of `engine` to `folder` (rank 0); return what the phase's metrics say
    about it: the folder and, for a quantized student, the sizes of its full-precision and
    quantized weight files."""
    model = engine.module.model
    if folder is None:
        return {}
    if not hasattr(model, "lm"):
        return _export_module(engine, zero_stage, folder, rank)
    from safetensors.torch import save_file

    from students.quantize import plain_state, quantized_state

    with gathered(engine, zero_stage):
        state = (plain_state(model.lm) if quantize_bits else full_state_dict(model.lm)) if rank == 0 else None
        packed = quantized_state(model.lm, quantize_bits) if quantize_bits and rank == 0 else None
    if rank != 0:
        return {}
    out: dict[str, Any] = {"exported_to": folder}
    with local_folder_for(folder) as target:  # a URI: written here, then uploaded (no shared volume needed)
        write_lm_folder(model.lm, state, tokenizer, target)
        if packed is not None:  # the real integers and scales; dequantized they are the weights written above
            quantized = target / f"quantized-int{quantize_bits}.safetensors"
            save_file(packed, str(quantized))
            out.update(exported_bytes=(target / "model.safetensors").stat().st_size,
                       quantized_bytes=quantized.stat().st_size)
    return out


def write_lm_folder(lm: torch.nn.Module, state: dict[str, torch.Tensor], tokenizer: str, target: Path) -> None:
    """A Hugging Face model folder: the weights `state`, the config and the generation config the
    model was loaded with, and the tokenizer with its chat template."""
    from ingest import load_tokenizer

    lm.save_pretrained(str(target), state_dict=state, safe_serialization=True)
    load_tokenizer(tokenizer).save_pretrained(str(target))


def _export_module(engine: Any, zero_stage: int, folder: str, rank: int) -> dict[str, Any]:
    """A student that is not a language model: its weights as `model.safetensors` (rank 0)."""
    from safetensors.torch import save_file

    with gathered(engine, zero_stage):
        # copies: DeepSpeed's parameters are views into its flat buffers, which safetensors refuses
        state = full_state_dict(engine.module.model) if rank == 0 else None
    if rank != 0:
        return {}
    with local_folder_for(folder) as target:
        save_file(state, str(target / "model.safetensors"))
    return {"exported_to": folder}
