"""The generator of synthetic inputs: inside the data's range, a step moves it toward inputs
where the student disagrees with the teachers, the student's parameters get no gradient,
and its state restores exactly."""

import numpy as np
import torch
import torch.nn.functional as F

from students.generator import SyntheticInputs, frozen_forward


def setup(seed=0):
    low, high = np.zeros(8, np.float32), np.linspace(1, 16, 8).astype(np.float32)
    inputs = SyntheticInputs(low, high, samples=32, z_dim=4, hidden=16, lr=0.05, seed=seed)
    torch.manual_seed(1)
    student = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    return low, high, inputs, student


def test_samples_stay_inside_the_data_range():
    low, high, inputs, _ = setup()
    _, x = inputs.sample()
    assert x.shape == (32, 8) and x.dtype == np.float32
    assert (x >= low).all() and (x <= high).all()


def test_steps_raise_the_disagreement_and_leave_the_student_alone():
    _, _, inputs, student = setup()
    z, x = inputs.sample()
    teacher_logprob = F.log_softmax(torch.randn(32, 5) * 3, dim=-1)  # the teachers' answer for these inputs
    forward = frozen_forward(student)
    first = inputs.step(z, forward, teacher_logprob, temperature=2.0)
    for _ in range(30):
        last = inputs.step(z, forward, teacher_logprob, temperature=2.0)
    assert last > first * 1.2
    assert all(p.grad is None for p in student.parameters())


def test_state_restores_weights_optimizer_and_noise():
    _, _, inputs, student = setup(seed=3)
    z, _ = inputs.sample()
    inputs.step(z, frozen_forward(student), F.log_softmax(torch.randn(32, 5), -1), 1.0)
    state = inputs.state_dict()
    _, _, restored, _ = setup(seed=4)
    restored.load_state_dict(state)
    z1, x1 = inputs.sample()
    z2, x2 = restored.sample()
    assert torch.equal(z1, z2) and np.array_equal(x1, x2)


def test_generator_configs_that_cannot_work_are_refused(tmp_path):
    import pytest
    import yaml

    from cluster.errors import ConfigError
    from orchestration.config import load_run_config

    def load(**changes):
        data = {"run": {"name": "g"}, "student": {"model": {"factory": "models.zoo:mlp"}},
                "teachers": [{"name": "t", "model": {"factory": "models.zoo:mlp"}}],
                "distill": {"generator": {"samples": 8}}}
        for section, value in changes.items():
            data[section] = value if value is None or not isinstance(data.get(section), dict) else {**data[section], **value}
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
        return load_run_config(path)

    assert load().distill.generator.samples == 8
    with pytest.raises(ConfigError, match="labelled by the run's served teachers"):
        load(teachers=None)
    with pytest.raises(ConfigError, match="labelled live"):
        load(distill={"mode": "offline"})
    with pytest.raises(ConfigError, match="ZeRO-3"):
        load(student={"zero_stage": 3})
    with pytest.raises(ConfigError, match="samples"):
        load(distill={"generator": {"samples": 1}})
