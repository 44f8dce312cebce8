"""Quantized distillation: a student that trains with its linear weights rounded to `bits`
(fake quantization, Polino et al. 2018) and exports the integers; its baseline is the
full-precision student rounded after training (post-training quantization).

Config: `distill.methods.<name>.quantize: <bits>` (checked by `check_quantized`). Phases: the method's phase gets
`QuantizedTraining`; the no-KD baseline of each seed gets `PostTrainingQuantization` over
every width a method asks for. The results lines are `orchestration.results.ptq_lines`.
"""

from __future__ import annotations

from typing import Any

import torch

from students import (Phase, PhaseHook, RunControl, fake_quantize_model, post_training_quantized, quantization_target,
                      refuse_zero3)


class QuantizedTraining(PhaseHook):
    def __init__(self, bits: int):
        self.bits = bits

    def prepare_model(self, model: torch.nn.Module, control: RunControl) -> None:
        # the student computes with rounded weights from the first step
        fake_quantize_model(quantization_target(model), self.bits)

    def export_options(self) -> dict[str, Any]:
        return {"quantize_bits": self.bits}


class PostTrainingQuantization(PhaseHook):
    """This (full-precision) student's test metrics with its linear weights rounded to each of
    `bits` after training (never under ZeRO-3: the config refuses quantized methods there)."""

    def __init__(self, bits: tuple[int, ...]):
        self.bits = bits

    def final_metrics(self, phase: Phase, evaluate) -> dict[str, Any]:
        metrics = {}
        for bits in self.bits:
            copy = post_training_quantized(phase.model, bits, quantization_target)
            scores = evaluate(copy)
            metrics.update({f"{key}_ptq_int{bits}": value for key, value in scores.items() if key.startswith("test_")})
        return metrics


def check_quantized(cfg: Any) -> None:
    quantized = sorted(n for n, m in (cfg.distill.methods or {}).items() if m.quantize)
    if quantized:
        refuse_zero3(cfg, f"distill.methods ({', '.join(quantized)}): quantized distillation parametrizes each "
                          f"layer's whole weight, which ZeRO-3 would shard (training hangs)")
