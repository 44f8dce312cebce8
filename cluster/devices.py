"""Where work runs: the process-group backend and the torch device, decided from what the work
was given (its Ray resources), not from the hardware of the process that plans it.

The driver of a KubeRay job usually runs on a head node without GPUs while the workers it
schedules have them, so nothing here looks at the driver's devices.
"""

from __future__ import annotations

from typing import Any, Optional

DTYPES = ("float32", "bfloat16", "float16")


def process_group_backend(gpus_per_worker: float) -> str:
    """nccl for train workers that are given GPUs, gloo for CPU workers."""
    return "nccl" if gpus_per_worker > 0 else "gloo"


def work_device(num_gpus: float, what: str, cuda_available: Optional[bool] = None) -> str:
    """The torch device for work given `num_gpus` GPUs, in the process that runs it: cuda when
    it was given any. A process that was given a GPU and sees none is refused (`what` names
    the work in the error) instead of silently running on its CPU."""
    if num_gpus <= 0:
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        raise RuntimeError(f"{what} was given {num_gpus:g} GPU(s) but its process sees no CUDA device "
                           f"(check the node's driver and CUDA_VISIBLE_DEVICES, or set num_gpus: 0)")
    return "cuda"


def work_dtype(name: str, device: str, what: str) -> Any:
    """The torch dtype a model runs in on `device`: `float32`, `bfloat16` (GPU or CPU) or
    `float16` (GPU only: CPU kernels for half precision are missing or slow)."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"{what}: dtype {name!r} is not one of {DTYPES}")
    if name == "float16" and str(device).startswith("cpu"):
        raise ValueError(f"{what}: dtype float16 needs a GPU (give it num_gpus), or use bfloat16 on the CPU")
    return getattr(torch, name)
