"""Multi-teacher weighting strategies against formulas written independently in numpy."""

import numpy as np
import pytest
import torch

from students.losses import CompositeLoss, Term
from students.teacher_merge import merge_teachers
from students.weighting import Weighting
from teachers.targets import TeacherTargets
from tests.unit.test_losses import np_softmax, record

T = 2.0


@pytest.fixture
def teachers():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 6, 5)).astype(np.float32) * np.array([1.0, 3.0, 0.3], np.float32)[:, None, None]
    labels = rng.integers(0, 5, size=6)
    static = np.array([0.5, 0.3, 0.2], np.float32)
    return logits, labels, static


def merged(strategy, teachers, **kwargs):
    logits, labels, static = teachers
    logprob = torch.log_softmax(torch.from_numpy(logits) / T, dim=-1)
    return merge_teachers(Weighting(strategy, **kwargs), ["a", "b", "c"], logprob, torch.from_numpy(static),
                          torch.from_numpy(labels))


def np_weights(score, static, sharpness):
    z = np.log(static)[None, :] + score / sharpness
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@pytest.mark.parametrize("strategy", ["confidence", "entropy", "label_agreement"])
def test_score_strategies_match_numpy(teachers, strategy):
    logits, labels, static = teachers
    p = np_softmax(logits, T)  # [N, B, C]
    score = {"confidence": np.log(p.max(-1)), "entropy": (p * np.log(p)).sum(-1),
             "label_agreement": np.log(p[:, np.arange(6), labels])}[strategy].T
    expected = np_weights(score, static, 0.5)
    out = merged(strategy, teachers, sharpness=0.5)
    np.testing.assert_allclose(out.weights.numpy(), expected, rtol=1e-5)
    mixture = np.einsum("bn,nbc->bc", expected, p)
    np.testing.assert_allclose(out.logprob.exp().numpy(), mixture, rtol=1e-5)


def test_static_strategy_equals_the_static_mixture(teachers):
    logits, _, static = teachers
    out = merged("static", teachers)
    mixture = np.einsum("n,nbc->bc", static, np_softmax(logits, T))
    np.testing.assert_allclose(out.logprob.exp().numpy(), mixture, rtol=1e-5, atol=1e-6)


def test_label_agreement_favours_the_teacher_that_is_right():
    logits = np.zeros((2, 4, 3), np.float32)
    labels = np.array([0, 1, 2, 0])
    logits[0, np.arange(4), labels] = 5.0          # teacher a is always right
    logits[1, np.arange(4), (labels + 1) % 3] = 5.0  # teacher b always wrong
    out = merge_teachers(Weighting("label_agreement"), ["a", "b"], torch.log_softmax(torch.from_numpy(logits), -1),
                         torch.tensor([0.5, 0.5]), torch.from_numpy(labels))
    assert (out.weights[:, 0] > 0.95).all()


def test_gate_learns_which_teacher_is_right_for_which_input():
    """Teacher a is right on inputs with x > 0, teacher b elsewhere: the gate's label loss
    alone teaches it to route by the sign of x."""
    torch.manual_seed(0)
    gate = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(gate.parameters(), lr=0.05)
    weighting = Weighting("gating", gate_teachers=("a", "b"))
    for _ in range(200):
        x = torch.randn(64, 1)
        labels = torch.randint(0, 3, (64,))
        right = torch.nn.functional.one_hot(labels, 3).float() * 6
        wrong = torch.nn.functional.one_hot((labels + 1) % 3, 3).float() * 6
        a = torch.where(x > 0, right, wrong)
        b = torch.where(x > 0, wrong, right)
        logprob = torch.log_softmax(torch.stack([a, b]), -1)
        out = merge_teachers(weighting, ["a", "b"], logprob, torch.tensor([0.5, 0.5]), labels, gate(x))
        optimizer.zero_grad()
        out.gate_loss.backward()
        optimizer.step()
    assert not out.weights.requires_grad and not out.logprob.requires_grad
    x = torch.tensor([[2.0], [-2.0]])
    w = torch.softmax(gate(x), dim=1)
    assert w[0, 0] > 0.9 and w[1, 1] > 0.9


def test_gate_gives_teachers_it_does_not_know_a_zero_logit():
    logprob = torch.log_softmax(torch.randn(2, 3, 4), -1)
    out = merge_teachers(Weighting("gating", gate_teachers=("a",)), ["a", "late"], logprob,
                         torch.tensor([0.5, 0.5]), torch.tensor([0, 1, 2]), torch.full((3, 1), np.log(3.0)))
    np.testing.assert_allclose(out.weights.numpy(), np.tile([0.75, 0.25], (3, 1)), rtol=1e-5)


def test_route_sends_each_sample_to_its_teacher_and_falls_back_to_static():
    logprob = torch.log_softmax(torch.randn(2, 4, 3), -1)
    weighting = Weighting("route", column="task", routes={"0": "a", "1": "b", "2": "gone"})
    out = merge_teachers(weighting, ["a", "b"], logprob, torch.tensor([0.25, 0.75]), torch.zeros(4, dtype=torch.long),
                         columns={"task": np.array([0, 1, 2, 3])})
    np.testing.assert_allclose(out.weights.numpy(), [[1, 0], [0, 1], [0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(out.logprob[0].numpy(), logprob[0, 0].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="no data column 'task'"):
        merge_teachers(weighting, ["a", "b"], logprob, torch.tensor([0.5, 0.5]), torch.zeros(4, dtype=torch.long))


def test_composite_loss_reports_teacher_weights_and_adds_the_gate_loss(teachers):
    logits, labels, static = teachers
    targets = TeacherTargets({n: record(logits[i], n, t=T) for i, n in enumerate("abc")}, dict(zip("abc", static.tolist())))
    student = torch.randn(6, 5, requires_grad=True)
    gate_logits = torch.randn(6, 3, requires_grad=True)
    loss = CompositeLoss([Term("ce", 0.5), Term("kd", 0.5)], T, Weighting("gating", gate_teachers=("a", "b", "c"),
                                                                          gate_loss_weight=2.0))
    out = loss(student, torch.from_numpy(labels), targets, gate_logits=gate_logits)
    assert out["total"].item() == pytest.approx(0.5 * out["ce"].item() + 0.5 * out["kd"].item() + 2 * out["gate"].item())
    assert sum(out[f"teacher_weight/{n}"].item() for n in "abc") == pytest.approx(1.0)
    out["total"].backward()
    assert gate_logits.grad.abs().sum() > 0


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown; known"):
        Weighting("majority")
