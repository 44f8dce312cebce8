"""Backends and devices follow what the work was given, not the planning process's hardware."""

import pytest

from cluster import process_group_backend, work_device


def test_the_process_group_backend_follows_the_workers_gpus():
    assert process_group_backend(1) == "nccl"
    assert process_group_backend(0.5) == "nccl"  # a fraction of a GPU is still a GPU worker
    assert process_group_backend(0) == "gloo"


def test_work_given_a_gpu_runs_on_it_and_work_without_one_on_the_cpu():
    assert work_device(1, "teacher 'gpt'", cuda_available=True) == "cuda"
    assert work_device(0, "teacher 'gpt'", cuda_available=True) == "cpu"
    assert work_device(0, "teacher 'gpt'", cuda_available=False) == "cpu"


def test_a_gpu_the_process_cannot_see_is_refused_naming_the_work():
    with pytest.raises(RuntimeError, match="precompute of teacher 'gpt' was given 1 GPU.*sees no CUDA device"):
        work_device(1, "precompute of teacher 'gpt'", cuda_available=False)

