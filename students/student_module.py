"""The module DeepSpeed trains: the student plus what its loss terms need from it.

Forward hooks keep the student's named features from each forward; learned projectors map a
student feature to a teacher feature's width (FitNets). Projectors live inside the module, so
DeepSpeed optimizes, shards and checkpoints them with the student.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from students.kd_terms import projector_key
from teachers.backend import FeatureHooks


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


class DistillationStudent(nn.Module):
    """Args:
        model: the student.
        layers: submodule names whose outputs the loss terms read.
        projections: (student layer, teacher feature '<teacher>/<layer>', teacher per-sample shape)
            for each FitNets hint.
        in_features: input width, for the dummy forward that learns the student's feature shapes.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], projections: list[tuple[str, str, list[int]]],
                 in_features: int):
        super().__init__()
        self.model = model
        self.hooks = FeatureHooks(model, sorted(set(layers) | {p[0] for p in projections}), "the student")
        shapes = {}
        if projections:
            with torch.no_grad():
                model(torch.zeros(2, in_features))
            shapes = {name: list(value.shape[1:]) for name, value in self.hooks.take().items()}
        self.projectors = nn.ModuleDict({
            projector_key(student, teacher): make_projector(shapes[student], shape, f"fitnet {student} -> {teacher}")
            for student, teacher, shape in projections})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def features(self) -> dict[str, torch.Tensor]:
        """The hooked features of the last forward (taken: the next call returns the next forward's)."""
        return self.hooks.take()
