"""Adversarial distillation: the discriminator learns alternately; the student's term pushes
its distributions toward the teacher's."""

import pytest
import torch

from students.discriminator import Adversary
from students.kd_terms import TERMS, TermInputs
from students.losses import CompositeLoss, Term
from tests.unit.test_losses import record
from teachers.targets import TeacherTargets


def test_discriminator_learns_to_tell_teacher_from_student():
    torch.manual_seed(0)
    adversary = Adversary(5, hidden=16, lr=1e-2)
    teacher = torch.log_softmax(torch.randn(64, 5) * 4, -1)   # peaked
    student = torch.log_softmax(torch.randn(64, 5) * 0.1, -1)  # nearly flat
    first = adversary.loss(student, teacher).item()
    for _ in range(100):
        adversary.step(adversary.loss(student, teacher))
    assert adversary.loss(student, teacher).item() < 0.2 * first
    d = adversary.discriminator
    assert torch.sigmoid(d(teacher.exp())).mean() > 0.9 and torch.sigmoid(d(student.exp())).mean() < 0.1


def test_student_term_is_the_generator_loss_and_moves_only_the_student():
    torch.manual_seed(1)
    adversary = Adversary(4)
    logits = torch.randn(8, 4, requires_grad=True)
    inputs = TermInputs(logits, torch.zeros(8, dtype=torch.long), 2.0, teacher_logprob=torch.log_softmax(torch.randn(8, 4), -1),
                        discriminator=adversary.discriminator)
    value = TERMS.get("adversarial")(inputs)
    expected = torch.nn.functional.softplus(-adversary.discriminator(torch.softmax(logits / 2.0, -1))).mean()
    assert value.item() == pytest.approx(expected.item())
    value.backward()
    assert logits.grad.abs().sum() > 0


def test_composite_loss_keeps_the_discriminator_out_of_the_student_total():
    torch.manual_seed(2)
    targets = TeacherTargets({"t": record(torch.randn(6, 5).numpy() * 3)}, {"t": 1.0})
    loss = CompositeLoss([Term("kd", 1.0), Term("adversarial", 0.5, {"hidden": 8})], 4.0, num_classes=5)
    student = torch.randn(6, 5, requires_grad=True)
    out = loss(student, torch.zeros(6, dtype=torch.long), targets)
    assert out["total"].item() == pytest.approx(out["kd"].item() + 0.5 * out["adversarial"].item())
    before = [p.detach().clone() for p in loss.adversary.discriminator.parameters()]
    out["total"].backward()
    loss.step_discriminator(out)
    after = list(loss.adversary.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert loss(student, torch.zeros(6, dtype=torch.long), None).keys() == {"total"}  # no teacher: no term, no step
    with pytest.raises(ValueError, match="needs the output width"):
        CompositeLoss([Term("adversarial")], 4.0)


def test_discriminator_starts_from_its_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    a, b = Adversary(4, seed=3), Adversary(4, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.discriminator.parameters(), b.discriminator.parameters()))
    assert torch.equal(torch.rand(3), expected_next)
