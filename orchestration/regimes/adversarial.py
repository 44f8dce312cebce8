"""Adversarial data-free augmentation: a generator proposes inputs where the teachers and the
student disagree most; the student also learns the teachers' targets on them.

Config: `distill.generator` (or a method's own `generator`; `students.config.GeneratorConfig`),
checked by `check_generator`. Phases: every KD phase with
teachers gets `SyntheticTraining`; one batch of generated inputs stays in flight to the
teachers while the next real batch trains (`students.generator`). The generator's state is
checkpointed with the student. The adversarial discriminator of the `adversarial` loss term
is part of the loss (`students.losses`), not of this regime.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from orchestration.regime import MethodPhase
from students import Phase, PhaseHook, SyntheticInputs, SyntheticStream, frozen_forward, refuse_zero3


class SyntheticTraining(PhaseHook):
    def __init__(self, cfg: Any, seed: int):
        self.cfg, self.seed = cfg, seed
        self.stream: Optional[SyntheticStream] = None

    def start(self, phase: Phase, extra_state: dict[str, Any]) -> None:
        if phase.source is None:
            return
        cfg, train = self.cfg, phase.train
        inputs = SyntheticInputs(train.x.min(0), train.x.max(0), samples=cfg.samples, z_dim=cfg.z_dim,
                                 hidden=cfg.hidden, lr=cfg.lr, device=phase.engine.device, seed=self.seed,
                                 rank=phase.rank)
        if "generator" in extra_state:
            inputs.load_state_dict(extra_state["generator"])
        self.stream = SyntheticStream(inputs, phase.source, phase.temperature, cfg.weight, f"{phase.name}-r{phase.rank}")

    def extra_loss(self, engine: Any) -> Optional[dict[str, Any]]:
        """A second forward, after the terms read the real batch's features."""
        extra = self.stream.loss(engine, engine.device) if self.stream is not None else None
        if not extra:
            return None
        return {"terms": {"synthetic_kd": extra["synthetic_kd"]}, "weighted": extra["weighted"]}

    def after_optimizer_step(self, engine: Any) -> dict[str, torch.Tensor]:
        if self.stream is None:
            return {}
        return self.stream.step_generator(frozen_forward(engine.module.model))

    def after_step(self, phase: Phase, step: int, targets) -> dict[str, torch.Tensor]:
        if self.stream is not None:
            self.stream.request(step)  # answered while the next real batch trains
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.stream.inputs.state_dict()} if self.stream is not None else {}


def check_generator(cfg: Any) -> None:
    methods = cfg.distill.methods or {}
    users = [(f"distill.methods.{n}", m) for n, m in methods.items() if m.generator or cfg.distill.generator]
    if not methods and cfg.distill.generator:
        users = [("distill.generator", None)]
    for where, method in users:
        if not cfg.teachers or (method is not None and method.teacher_snapshot):
            raise ValueError(f"{where}: the generator's samples are labelled by the run's served teachers; "
                             f"give teachers (a snapshot teacher is not one)")
        if (cfg.distill.mode == "offline" or not cfg.data.classification or cfg.data.cross_modal or cfg.online
                or cfg.continual):
            raise ValueError(f"{where}: synthetic inputs are labelled live: use distill.mode online on "
                             f"classification data that teachers and students read alike (not "
                             f"{cfg.data.described}{', cross-modal' if cfg.data.cross_modal else ''}), without "
                             f"online or continual sections")
        refuse_zero3(cfg, f"{where}: the generator's step runs the student with rank 0's full weights")


def method_hooks(phase: MethodPhase) -> list[PhaseHook]:
    """A KD method's generator: its own, else the run's (never the baseline's)."""
    if phase.method is None:
        return []
    generator = (phase.method_cfg.generator if phase.method_cfg is not None else None) or phase.cfg.distill.generator
    return [SyntheticTraining(generator, phase.seed)] if generator is not None else []
