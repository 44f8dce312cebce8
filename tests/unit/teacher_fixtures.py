"""A real, small teacher on disk (random weights) for tests that need a LoadedTeacher."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from teachers.backend import ResolvedModel
from teachers.loaded import LoadedTeacher, TeacherAppArgs

IN_FEATURES, CLASSES = 64, 10


def teacher_args(folder: Path, name: str = "mlp", temperature: float = 4.0, classes: int = CLASSES) -> TeacherAppArgs:
    model = ResolvedModel("models.zoo:mlp", {"in_features": IN_FEATURES, "num_classes": classes, "hidden": [32]})
    torch.manual_seed(0)
    path = folder / f"{name}.safetensors"
    save_file(model.build().state_dict(), str(path))
    return TeacherAppArgs(name=name, factory=model.factory, kwargs=model.kwargs,
                          allowed_modules=list(model.allowed_modules), weights_path=str(path),
                          in_features=IN_FEATURES, temperature=temperature, dense_max_classes=1024, top_k=8)


def loaded_teacher(folder: Path, **kwargs) -> LoadedTeacher:
    return LoadedTeacher.load(teacher_args(folder, **kwargs))
