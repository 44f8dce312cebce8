"""The module DeepSpeed trains: the student plus what its loss terms need from it.

Forward hooks keep the student's named features from each forward; learned projectors map a
student feature to a teacher feature's width (FitNets), and classifier heads on hidden layers
are the shallow exits of self-distillation (BYOT). Projectors and heads live inside the module, so
DeepSpeed optimizes, shards and checkpoints them with the student.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from students.kd_terms import exit_key, projector_key
from teachers import FeatureHooks, dummy_inputs


def make_projector(student_shape: list[int], teacher_shape: list[int], where: str) -> nn.Module:
    """Linear for [d] and [T, d] features, 1x1 convolution for [C, H, W] maps."""
    if len(student_shape) != len(teacher_shape) or (len(student_shape) == 2 and student_shape[0] != teacher_shape[0]):
        raise ValueError(f"{where}: student feature {student_shape} and teacher feature {teacher_shape} do not align")
    if len(student_shape) in (1, 2):
        return nn.Linear(student_shape[-1], teacher_shape[-1])
    if len(student_shape) == 3:
        if student_shape[1:] != teacher_shape[1:]:
            raise ValueError(f"{where}: feature maps {student_shape} and {teacher_shape} differ in H, W")
        return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
    raise ValueError(f"{where}: features of shape {student_shape} are not supported (use [d], [T, d] or [C, H, W])")


def make_exit_head(shape: list[int], num_classes: int, where: str) -> nn.Module:
    """A classifier on a hidden feature (self-distillation exits): linear on [d], mean over
    positions then linear on [T, d], global average pooling then linear on [C, H, W]."""
    if len(shape) == 1:
        return nn.Linear(shape[0], num_classes)
    if len(shape) == 2:
        return nn.Sequential(_MeanOverPositions(), nn.Linear(shape[1], num_classes))
    if len(shape) == 3:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], num_classes))
    raise ValueError(f"{where}: features of shape {shape} are not supported (use [d], [T, d] or [C, H, W])")


class _MeanOverPositions(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


class DistillationStudent(nn.Module):
    """Args:
        model: the student.
        layers: submodule names whose outputs the loss terms read.
        projections: (student layer, teacher feature '<teacher>/<layer>', teacher per-sample shape)
            for each FitNets hint.
        in_features: input width, for the dummy forward that learns the student's feature shapes.
        exits: student layers that get a classifier head (self-distillation exits).
        exit_hints: (exit layer, deepest layer) pairs that get a projector between them.
        matched: (student layer, teacher feature, teacher shape) of hints without a projector:
            the shapes must be equal, checked here, before any training step.
        gate_teachers: teachers of a learned gate (multi-teacher `gating` weighting): a small
            network from the student's input to one logit per teacher, trained with the student.
        gate_hidden: the gate's hidden width.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], projections: list[tuple[str, str, list[int]]],
                 in_features: int, exits: Iterable[str] = (), exit_hints: Iterable[tuple[str, str]] = (),
                 matched: Iterable[tuple[str, str, list[int]]] = (), gate_teachers: Iterable[str] = (),
                 gate_hidden: int = 32):
        super().__init__()
        gate_teachers = list(gate_teachers)
        self.gate = (nn.Sequential(nn.Flatten(), nn.Linear(in_features, gate_hidden), nn.ReLU(),
                                   nn.Linear(gate_hidden, len(gate_teachers))) if gate_teachers else None)
        self._gate_logits: torch.Tensor | None = None
        exits, exit_hints, matched = list(exits), list(exit_hints), list(matched)
        self.model = model
        hooked = (set(layers) | {p[0] for p in projections + matched} | set(exits)
                  | {name for pair in exit_hints for name in pair})
        self.hooks = FeatureHooks(model, sorted(hooked), "the student")
        shapes, num_classes = {}, 0
        if projections or exits or matched:
            training = model.training
            model.eval()  # batch norm statistics stay untouched by the shape probe
            with torch.no_grad():
                num_classes = model(dummy_inputs(model, 2, in_features)).shape[-1]
            model.train(training)
            shapes = {name: list(value.shape[1:]) for name, value in self.hooks.take().items()}
        for student, teacher, shape in matched:
            if shapes[student] != list(shape):
                raise ValueError(f"fitnet without projector: student feature {student!r} has per-sample shape "
                                 f"{shapes[student]}, teacher feature {teacher!r} has {list(shape)}; set "
                                 f"projector: true to learn a map between them")
        modules = {projector_key(student, teacher): make_projector(shapes[student], shape, f"fitnet {student} -> {teacher}")
                   for student, teacher, shape in projections}
        modules.update({exit_key(layer): make_exit_head(shapes[layer], num_classes, f"byot exit {layer}")
                        for layer in exits})
        modules.update({projector_key(layer, deepest): make_projector(shapes[layer], shapes[deepest],
                                                                      f"byot hint {layer} -> {deepest}")
                        for layer, deepest in exit_hints})
        self.projectors = nn.ModuleDict(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self._gate_logits = self.gate(x.float())
        return self.model(x)

    def gate_logits(self) -> torch.Tensor | None:
        """The gate's [B, teachers] logits for the last forward (None without a gate)."""
        out, self._gate_logits = self._gate_logits, None
        return out

    def features(self) -> dict[str, torch.Tensor]:
        """The hooked features of the last forward (taken: the next call returns the next forward's)."""
        return self.hooks.take()
