"""The students' learning-rate schedule: warmup, then constant, linear or cosine decay."""

import math

import pytest
import torch

from students.config import StudentConfig
from students.lr_schedule import lr_multiplier, scheduler_for

MODEL = {"factory": "models.zoo:mlp"}


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_warmup_rises_linearly_then_the_decay_ends_at_its_floor(kind):
    at = [lr_multiplier(s, total=100, warmup=10, kind=kind, min_ratio=0.1) for s in range(120)]
    assert at[0] == pytest.approx(0.1) and at[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(at[:10], at[1:10]))
    if kind == "constant":
        assert set(at[10:]) == {1.0}
    else:
        assert all(a >= b for a, b in zip(at[10:], at[11:])) and at[100] == pytest.approx(0.1) == at[119]
    if kind == "cosine":
        assert at[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_the_scheduler_drives_the_optimizers_learning_rate_and_takes_warmup_ratio():
    student = StudentConfig(model=MODEL, lr=0.5, lr_scheduler="linear", warmup_ratio=0.2)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=student.lr)
    scheduler = scheduler_for(student, total=10)(optimizer)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[:4] == pytest.approx([0.25, 0.5, 0.5, 0.5 * 7 / 8]) and seen[-1] == pytest.approx(0.5 / 8)


def test_a_decay_on_a_streamed_source_is_refused_with_the_fix():
    from students.config import check_stream

    class Cfg:  # the fields check_stream reads
        class data:
            class source:
                stream = True
            student_train_samples = None
        continual = online = None

        class distill:
            generator = None
            methods = None
        student = StudentConfig(model=MODEL, lr_scheduler="cosine")

    with pytest.raises(ValueError, match="use lr_scheduler: constant with warmup_steps, or stream: false"):
        check_stream(Cfg)
    Cfg.student = StudentConfig(model=MODEL, warmup_steps=5)
    check_stream(Cfg)
