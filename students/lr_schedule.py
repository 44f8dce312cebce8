"""The students' learning-rate schedule (plain torch): a linear warmup, then constant, linear or
cosine decay to `min_lr_ratio` of the peak, as Hugging Face's and TRL's `lr_scheduler_type`
does. DeepSpeed steps it once per optimizer step and keeps its state in the checkpoint, so a
resumed phase goes on where the schedule was."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch


def lr_multiplier(step: int, *, total: int, warmup: int, kind: str, min_ratio: float) -> float:
    """The share of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    if kind == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"student.lr_scheduler: {kind!r} is not one of constant, linear, cosine")


def warmup_steps(student: Any, total: int) -> int:
    """`student.warmup_steps`, else `warmup_ratio` of the phase's optimizer steps."""
    return student.warmup_steps or int(student.warmup_ratio * total)


def scheduler_for(student: Any, total: int) -> Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LambdaLR]:
    """What `deepspeed.initialize(lr_scheduler=...)` takes: the optimizer -> its schedule over
    `total` optimizer steps (`student.lr_scheduler`, `warmup_steps` or `warmup_ratio`,
    `min_lr_ratio`)."""
    warmup = warmup_steps(student, total)

    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(
            step, total=total, warmup=warmup, kind=student.lr_scheduler, min_ratio=student.min_lr_ratio))

    return make
