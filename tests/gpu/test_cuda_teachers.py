"""Teachers given a GPU train and answer on it (skipped without CUDA)."""

import pytest
import torch

from cluster import ModelSpec
from orchestration.teacher_training import train_or_load_teacher
from students.config import DataConfig
from students.data import load_dataset
from teachers.backend import resolve_model
from teachers.config import TeacherTrainingConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_a_teacher_given_a_gpu_trains_there_and_is_cached_on_the_cpu(tmp_path):
    data = DataConfig()
    dataset = load_dataset(data)
    model = resolve_model(ModelSpec(factory="teachers.zoo:mlp", kwargs={"hidden": [64]}),
                          in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=["teachers.zoo"])
    trained = train_or_load_teacher("mlp", model, TeacherTrainingConfig(epochs=2), data, dataset, tmp_path, 1)
    assert not trained.cached and trained.test_score > 0.5
