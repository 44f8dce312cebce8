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


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_teacher_answers_on_the_gpu_like_its_float32_self(tmp_path, dtype):
    import numpy as np

    from teachers.batch import Batch
    from teachers.loaded import LoadedTeacher
    from tests.unit.teacher_fixtures import IN_FEATURES, teacher_args

    args = teacher_args(tmp_path)
    full = LoadedTeacher.load(args, "cuda")
    half = LoadedTeacher.load(args.model_copy(update={"dtype": dtype}), "cuda")
    assert half.dtype == getattr(torch, dtype) and next(half.module.parameters()).is_cuda
    batch = Batch.of_inputs("b0", np.random.default_rng(0).random((64, IN_FEATURES), dtype=np.float32))
    ours, theirs = half.records([batch], temperature=1.0)[0], full.records([batch], temperature=1.0)[0]
    assert ours.logprob.dtype == np.float32
    assert np.abs(np.exp(ours.logprob) - np.exp(theirs.logprob)).max() < 0.02
