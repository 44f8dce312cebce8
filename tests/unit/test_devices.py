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
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3.0,
                                            "upscale_delay_s": 30.0, "downscale_delay_s": 600.0}
    with pytest.raises(ValueError, match="min_replicas 5 is above max_replicas 2"):
        ResourcesConfig.model_validate({"autoscaling": {"min_replicas": 5, "max_replicas": 2}})


def test_teachers_and_students_are_placed_on_their_node_groups(tmp_path):
    """Custom resources and node labels from the config reach Serve's replicas, the teacher's
    training task, the precompute scorer and the student workers' `ScalingConfig`."""
    from cluster import ResourcesConfig
    from orchestration.precompute import scorer_options
    from orchestration.teacher_training import training_options
    from orchestration.training import student_scaling
    from students import StudentConfig
    from teachers import TeacherConfig
    from teachers.deployment import deployment_options
    from tests.unit.teacher_fixtures import teacher_args

    placed = ResourcesConfig(num_cpus=1, num_gpus=1, custom={"teacher_node": 0.5}, labels={"pool": "teachers"})
    served = deployment_options(teacher_args(tmp_path).model_copy(update={"resources": placed}))
    assert served["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1, "resources": {"teacher_node": 0.5},
                                           "label_selector": {"pool": "teachers"}}
    teacher = TeacherConfig(name="t", model={"factory": "models.zoo:mlp"}, resources=placed)
    assert training_options(teacher) == {"num_cpus": 0.25, "num_gpus": 1, "resources": {"teacher_node": 0.5},
                                         "label_selector": {"pool": "teachers"}}
    assert scorer_options(ResourcesConfig())["num_gpus"] is None  # Ray Data's CPU actor
    assert scorer_options(placed)["resources"] == {"teacher_node": 0.5}
    student = StudentConfig(model={"factory": "models.zoo:mlp"}, num_workers=4, cpus_per_worker=2, gpus_per_worker=1,
                            custom={"student_node": 1}, labels={"pool": "students"})
    assert student_scaling(student) == {"num_workers": 4, "use_gpu": True, "label_selector": {"pool": "students"},
                                        "resources_per_worker": {"CPU": 2, "GPU": 1, "student_node": 1}}
    cpu_only = student_scaling(StudentConfig(model={"factory": "models.zoo:mlp"}))
    assert cpu_only["use_gpu"] is False and "GPU" not in cpu_only["resources_per_worker"]
    assert cpu_only["label_selector"] is None


@pytest.mark.parametrize("custom, problem", [({"GPU": 1}, "one of Ray's own resources"),
                                             ({"teacher_node": 0}, "must be above 0")])
def test_custom_resources_that_ray_would_misread_are_refused(custom, problem):
    from cluster import ResourcesConfig

    with pytest.raises(ValueError, match=problem):
        ResourcesConfig(custom=custom)


def test_a_bfloat16_teacher_answers_like_its_float32_self_in_half_the_memory(tmp_path):
    """`dtype: bfloat16` loads the weights in bf16 and casts feature inputs to it; its records
    are float32 log-probabilities close to the float32 teacher's (bf16 keeps 8 bits of
    mantissa), its top classes the same."""
    import numpy as np
    import torch

    from ingest.batches import Batch
    from teachers.loaded import LoadedTeacher
    from tests.unit.teacher_fixtures import IN_FEATURES, teacher_args

    args = teacher_args(tmp_path)
    full, half = LoadedTeacher.load(args), LoadedTeacher.load(args.model_copy(update={"dtype": "bfloat16"}))
    assert half.dtype == torch.bfloat16 and full.dtype == torch.float32
    size = lambda t: sum(p.numel() * p.element_size() for p in t.module.parameters())  # noqa: E731
    assert size(half) * 2 == size(full)
    batch = Batch.of_inputs("b0", np.random.default_rng(0).random((32, IN_FEATURES), dtype=np.float32))
    ours, theirs = half.records([batch], temperature=1.0)[0], full.records([batch], temperature=1.0)[0]
    assert ours.logprob.dtype == np.float32
    assert np.abs(np.exp(ours.logprob) - np.exp(theirs.logprob)).max() < 0.02
    assert (ours.logprob.argmax(1) == theirs.logprob.argmax(1)).mean() >= 0.9
    from orchestration.teacher_training import accuracy

    labels = theirs.logprob.argmax(1)  # the float32 teacher's own answers: it scores 1.0 on them
    assert accuracy(full.module, batch.teacher_x, labels) == 1.0
    assert accuracy(half.module, batch.teacher_x, labels, chunk=5) >= 0.9  # bf16 features, in chunks


def test_a_teacher_dtype_is_decided_per_device():
    import torch

    from cluster import work_dtype

    assert work_dtype("bfloat16", "cpu", "teacher 'gpt'") == torch.bfloat16
    assert work_dtype("float16", "cuda", "teacher 'gpt'") == torch.float16
    with pytest.raises(ValueError, match="teacher 'gpt': dtype float16 needs a GPU"):
        work_dtype("float16", "cpu", "teacher 'gpt'")
    from teachers import TeacherConfig

    with pytest.raises(ValueError, match="dtype"):
        TeacherConfig(name="t", model={"factory": "models.zoo:mlp"}, dtype="int8")


def test_a_teachers_dtype_defaults_to_bfloat16_on_gpus_and_float32_on_cpus():
    from teachers.config import TeacherConfig

    model = {"factory": "models.zoo:mlp", "kwargs": {}}
    assert TeacherConfig(name="t", model=model).dtype == "float32"
    assert TeacherConfig(name="t", model=model, resources={"num_gpus": 1}).dtype == "bfloat16"
    assert TeacherConfig(name="t", model=model, resources={"num_gpus": 1}, dtype="float32").dtype == "float32"


def test_a_teacher_builds_in_its_dtype_when_its_factory_takes_one():
    from teachers.backend import loading_kwargs

    kwargs = {"tokenizer": "t", "config": {}}
    assert loading_kwargs("models.hf_lm:causal_lm", kwargs, ["models.hf_lm"], "bfloat16")["dtype"] == "bfloat16"
    assert loading_kwargs("models.hf_lm:causal_lm", {**kwargs, "dtype": "float32"}, ["models.hf_lm"],
                          "bfloat16")["dtype"] == "float32"  # the model's own kwargs win
    assert "dtype" not in loading_kwargs("models.zoo:mlp", {"hidden": [8]}, ["models.zoo"], "bfloat16")
