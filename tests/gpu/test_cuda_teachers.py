"""Teachers given a GPU train and answer on it (skipped without CUDA)."""

import pytest
import torch

from cluster import ModelSpec
from ingest.config import DataConfig
from ingest.loading import load_dataset
from orchestration.teacher_training import train_or_load_teacher
from teachers.backend import resolve_model
from teachers.config import TeacherTrainingConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_a_teacher_given_a_gpu_trains_there_and_is_cached_on_the_cpu(tmp_path):
    data = DataConfig()
    dataset = load_dataset(data)
    model = resolve_model(ModelSpec(factory="models.zoo:mlp", kwargs={"hidden": [64]}),
                          in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=["models.zoo"])
    trained = train_or_load_teacher("mlp", model, TeacherTrainingConfig(epochs=2), data, dataset, tmp_path, 1)
    assert not trained.cached and trained.test_score > 0.5


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_teacher_answers_on_the_gpu_like_its_float32_self(tmp_path, dtype):
    import numpy as np

    from ingest.batches import Batch
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


def test_a_snapshot_given_a_gpu_labels_its_replay_memory_there_as_on_the_cpu(tmp_path):
    """Continual replay with stored targets: the labelling task runs on the GPU its resources
    give it, chunk by chunk, and stores what the CPU stores."""
    import numpy as np
    import pyarrow.parquet as pq

    from cluster import ResourcesConfig
    from orchestration.snapshots import label_memory
    from teachers.arrow_codec import table_to_record
    from students.teacher_merge import record_logprob
    from tests.unit.teacher_fixtures import CLASSES, IN_FEATURES, teacher_args

    args = teacher_args(tmp_path, temperature=2.0)
    x = np.random.default_rng(0).random((300, IN_FEATURES), dtype=np.float32)  # two chunks of at most 256
    rows = np.arange(300) * 2
    on_gpu = args.model_copy(update={"resources": ResourcesConfig(num_gpus=1)})
    label_memory(on_gpu, x, rows, CLASSES, str(tmp_path / "gpu.parquet"))
    label_memory(args, x, rows, CLASSES, str(tmp_path / "cpu.parquet"))
    gpu, cpu = (table_to_record(pq.read_table(tmp_path / f"{side}.parquet"), source=side, batch_id="")
                for side in ("gpu", "cpu"))
    assert pq.read_table(tmp_path / "gpu.parquet").column("sample").to_pylist() == rows.tolist()
    assert (record_logprob(gpu, 2.0) - record_logprob(cpu, 2.0)).abs().max() < 1e-2
