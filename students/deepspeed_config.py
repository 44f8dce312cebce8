"""The DeepSpeed config a student's engine runs with, generated from `StudentConfig`."""

from __future__ import annotations

from typing import Any

from students.config import StudentConfig


def deepspeed_config(cfg: StudentConfig, world_size: int) -> dict[str, Any]:
    """ZeRO stage, precision, micro-batch and accumulation from the config.

    `torch_adam` keeps the optimizer on torch's AdamW, which runs on CPU and GPU alike
    without compiling DeepSpeed's fused op. With `offload_optimizer` the optimizer states and
    step move to host memory, where DeepSpeed runs its own CPU Adam (a C++ op built on first use).
    """
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.gpus_per_worker > 0}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world_size,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "torch_adam": not cfg.offload_optimizer},
        },
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "gradient_clipping": cfg.gradient_clipping,
        "steps_per_print": 1 << 30,  # progress goes through Distillery's own metrics
        "wall_clock_breakdown": False,
    }
