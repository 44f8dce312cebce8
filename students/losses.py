"""Distillation losses (plain torch). Each states its formula and where it comes from.

All losses take the student's raw logits [B, C], the hard labels [B] and a `TeacherTargets`
(the weighted merge of the teachers' records, see `students.targets`), and return a dict of
named scalar terms whose key "total" is what the optimizer minimizes.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from cluster.registry import Registry
from teachers.targets import TeacherTargets

LossFn = Callable[..., dict[str, torch.Tensor]]
LOSSES: Registry[LossFn] = Registry("loss")


def kl_teacher_student(teacher_logprob: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T || q_T) averaged over the batch, p_T the teacher's and q_T the student's
    temperature-scaled distributions: sum_c p_c (log p_c - log q_c)."""
    student_logprob = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(student_logprob, teacher_logprob, reduction="batchmean", log_target=True)


@LOSSES.register("ce")
def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor,
                  targets: Optional[TeacherTargets] = None, **_: float) -> dict[str, torch.Tensor]:
    """Supervised cross-entropy on hard labels: the no-KD baseline."""
    ce = F.cross_entropy(student_logits, labels)
    return {"total": ce, "ce": ce}


@LOSSES.register("hinton_kd")
def hinton_kd(student_logits: torch.Tensor, labels: torch.Tensor, targets: Optional[TeacherTargets],
              *, alpha: float, temperature: float) -> dict[str, torch.Tensor]:
    """Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network":

        L = alpha * CE(y, softmax(z_s)) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

    The T^2 factor keeps the soft term's gradient scale independent of T. With no teacher
    available for a batch (`targets is None`) only the CE term remains.
    """
    ce = F.cross_entropy(student_logits, labels)
    if targets is None:
        return {"total": ce, "ce": ce}
    teacher_logprob = targets.logprob(temperature).to(student_logits.device)
    kd = kl_teacher_student(teacher_logprob, student_logits, temperature) * temperature**2
    return {"total": alpha * ce + (1 - alpha) * kd, "ce": ce, "kd": kd}


@LOSSES.register("logit_mse")
def logit_mse(student_logits: torch.Tensor, labels: torch.Tensor, targets: Optional[TeacherTargets],
              *, alpha: float, temperature: float) -> dict[str, torch.Tensor]:
    """Logit matching (Ba and Caruana 2014, "Do Deep Nets Really Need to be Deep?"):

        L = alpha * CE(y, softmax(z_s)) + (1 - alpha) * mean_c (z_s - z_t)^2

    the high-temperature limit of Hinton KD (for zero-mean logits). Needs dense teacher logits.
    """
    ce = F.cross_entropy(student_logits, labels)
    if targets is None:
        return {"total": ce, "ce": ce}
    mse = F.mse_loss(student_logits, targets.logits().to(student_logits.device))
    return {"total": alpha * ce + (1 - alpha) * mse, "ce": ce, "mse": mse}
