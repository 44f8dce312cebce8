"""The student module and its DeepSpeed engine (built the same way on every rank)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch

from students.deepspeed_config import deepspeed_config
from students.lr_schedule import scheduler_for
from students.hooks import each
from students.job import StudentJob
from students.losses import feature_refs, self_distillation_exits
from students.run_control import RunControl
from students.student_module import DistillationStudent


def import_deepspeed():
    # DeepSpeed picks its accelerator at import time; without CUDA it must be told "cpu".
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed


def feature_hints(terms) -> bool:
    """Whether the terms need the student's feature shapes before training (a probe forward)."""
    return any(t.name == "fitnet" for t in terms) or bool(self_distillation_exits(terms)[0])


def student_module(job: StudentJob, control: RunControl, in_features: int) -> DistillationStudent:
    """The student with the hooks, FitNets projectors and self-distillation exits its terms need."""
    layers, _ = feature_refs(job.terms)
    hints = [t for t in job.terms if t.name == "fitnet"]
    projections, matched = [], []
    if hints:
        teachers = control.teacher_set().teachers
        for term in hints:
            teacher, _, layer = term.params["teacher"].partition("/")
            shapes = teachers[teacher].feature_shapes if teacher in teachers else {}
            if layer not in shapes:
                raise ValueError(f"fitnet: teacher {teacher!r} sends no feature {layer!r} (it sends {sorted(shapes)})")
            hint = (term.params["student"], term.params["teacher"], shapes[layer])
            (projections if term.params.get("projector", True) else matched).append(hint)
    exits, exit_hints = self_distillation_exits(job.terms)
    return DistillationStudent(job.model.build(), layers, projections, in_features, exits, exit_hints, matched,
                               job.weighting.gate_teachers, job.weighting.gate_hidden)


def build_engine(job: StudentJob, control: RunControl, world_size: int, in_features: int,
                 micro_steps: int) -> tuple[Any, int]:
    """The DeepSpeed engine of the phase's student, with its learning-rate schedule over the
    phase's `micro_steps` (micro-batches of each rank), and the student's parameter count."""
    deepspeed = import_deepspeed()
    torch.manual_seed(job.init_seed if job.init_seed is not None else job.seed)  # the same weights on every rank
    config = deepspeed_config(job.student, world_size)
    with sharded_build(job, config):
        module = student_module(job, control, in_features)
    if job.student.activation_checkpointing:
        checkpointed(module.model)
    each(job.hooks, "prepare_model", module.model, control)
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in module.model.parameters())  # whole, if partitioned
    optimizer_steps = max(1, -(-micro_steps // job.student.gradient_accumulation_steps))
    engine, *_ = deepspeed.initialize(model=module, model_parameters=module.parameters(), config=config,
                                      lr_scheduler=scheduler_for(job.student, optimizer_steps))
    return engine, parameters


@contextlib.contextmanager
def sharded_build(job: StudentJob, config: dict[str, Any]) -> Iterator[None]:
    """Under ZeRO-3, the student is built partitioned across the ranks (`deepspeed.zero.Init`;
    transformers then loads a pretrained student's weights straight into the partitions), so no
    rank holds a whole copy. A student whose terms need a shape probe (FitNets projectors,
    self-distillation exits) is built whole first, as under the other stages."""
    if job.student.zero_stage != 3 or feature_hints(job.terms):
        yield
        return
    import deepspeed
    import torch._dynamo  # noqa: F401 - its import fails under zero.Init's patched tensor constructors
    from transformers.integrations import HfDeepSpeedConfig

    if torch.distributed.is_initialized():  # Ray Train's process group: DeepSpeed partitions over its ranks
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
    hf_config = HfDeepSpeedConfig(config)  # transformers builds and loads partitioned while this lives
    with deepspeed.zero.Init(config_dict_or_path=config):
        yield
    del hf_config


def checkpointed(model: torch.nn.Module) -> None:
    """Turn on a Hugging Face model's activation checkpointing (`student.activation_checkpointing`)."""
    inner = next((m for m in model.modules() if hasattr(m, "gradient_checkpointing_enable")), None)
    if inner is None:
        raise ValueError(f"student.activation_checkpointing: {type(model).__name__} holds no Hugging Face model "
                         f"(models.hf, models.hf_lm) to recompute activations for; turn it off")
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def mixed_precision(engine: Any, precision: str):
    """bf16/fp16 students: autocast casts float32 inputs and teacher targets for the module's
    matmuls and keeps losses and reductions in float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=engine.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
