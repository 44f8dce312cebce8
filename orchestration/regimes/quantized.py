"""Quantized distillation: a student that trains with its linear weights rounded to `bits`
(fake quantization, Polino et al. 2018) and exports the integers; its baseline is the
full-precision student rounded after training (post-training quantization).

Config: `distill.methods.<name>.quantize: <bits>` (checked by `check_quantized`). Phases: the method's phase gets
`QuantizedTraining`; the no-KD baseline of each seed gets `PostTrainingQuantization` over
every width a method asks for. Results: `ptq_lines`, the baseline after post-training quantization, below the table.
"""

from __future__ import annotations

from typing import Any

import torch

from orchestration.regime import MethodPhase
from cluster import phase_kind
from orchestration.results import METRICS, mean_std
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


def ptq_lines(phases: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """The no-KD baseline after post-training quantization (`<metric>_ptq_int<bits>`), mean ±
    std over seeds: what quantized distillation is compared with."""
    baselines = [p for name, p in sorted(phases.items()) if phase_kind(name) == "baseline"]
    lines = []
    for bits in (8, 4):
        key = f"{metric}_ptq_int{bits}"
        if baselines and all(key in p for p in baselines):
            mean, std = mean_std([p[key] for p in baselines])
            lines.append(f"student (no KD) after post-training int{bits} quantization: {METRICS[metric][0]} "
                         f"{mean:.4f} ± {std:.4f} ({', '.join(f'{p[key]:.4f}' for p in baselines)})")
    return lines


def method_hooks(phase: MethodPhase) -> list[PhaseHook]:
    """A quantized method trains quantized; the baseline is also scored at every width asked for."""
    if phase.method is None:
        bits = tuple(sorted({m.quantize for m in (phase.cfg.distill.methods or {}).values() if m.quantize},
                            reverse=True))
        return [PostTrainingQuantization(bits)] if bits else []
    method = phase.method_cfg
    return [QuantizedTraining(method.quantize)] if method is not None and method.quantize else []
