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



def test_a_teachers_serve_deployment_has_a_fixed_count_or_autoscaling(tmp_path):
    """`resources.replicas` fixes the count; `resources.autoscaling` hands it to Serve's autoscaler
    (Serve refuses both at once), bounded and aimed at a number of requests in flight."""
    from cluster import ResourcesConfig
    from teachers.deployment import deployment_options
    from tests.unit.teacher_fixtures import teacher_args

    args = teacher_args(tmp_path)
    fixed = deployment_options(args.model_copy(update={"resources": ResourcesConfig(replicas=3, num_gpus=1)}))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 1}
    scaled = deployment_options(args.model_copy(update={"resources": ResourcesConfig.model_validate(
        {"autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}})}))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3.0}
    with pytest.raises(ValueError, match="min_replicas 5 is above max_replicas 2"):
        ResourcesConfig.model_validate({"autoscaling": {"min_replicas": 5, "max_replicas": 2}})
