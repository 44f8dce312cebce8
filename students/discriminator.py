"""Adversarial distillation: a discriminator that tells the teachers' output distributions from
the student's, trained alternately with the student (plain torch).

Xu, Hsu and Huang (2018), "Training Shallow and Thin Networks for Acceleration via Knowledge
Distillation with Conditional Adversarial Networks": D(p) scores a temperature-T class
distribution p; after each student step, D takes one step on
  loss_D = BCE(D(p_teacher), 1) + BCE(D(p_student), 0)
(its own Adam optimizer; its gradients averaged over the data-parallel workers, so every rank
keeps the same D), while the student's `adversarial` term (students.kd_terms) is the
non-saturating generator loss -log sigmoid(D(p_student)).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def average_gradients(module: nn.Module) -> None:
    """Average `module`'s gradients over the data-parallel workers (a no-op on one), so that a
    model trained beside the DeepSpeed engine stays the same on every rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for param in module.parameters():
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()


class Discriminator(nn.Module):
    """An MLP from a [B, C] class distribution to one logit per sample."""

    def __init__(self, num_classes: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_classes, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.net(probs.float()).squeeze(-1)


class Adversary:
    """The discriminator, its optimizer and its alternating step.

    Args:
        num_classes: the output space's width.
        hidden: the discriminator's hidden width.
        lr: its Adam learning rate.
        device: where it lives (the student's device).
        seed: its initial weights' seed (the same on every rank); the global RNG is left alone.
    """

    def __init__(self, num_classes: int, hidden: int = 64, lr: float = 1e-3, device: Any = "cpu", seed: int = 0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            discriminator = Discriminator(num_classes, hidden)
        self.discriminator = discriminator.to(device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))

    def loss(self, student_logprob: torch.Tensor, teacher_logprob: torch.Tensor) -> torch.Tensor:
        """loss_D on one batch; the student's side is detached, so only D learns from it."""
        real = self.discriminator(teacher_logprob.detach().exp())
        fake = self.discriminator(student_logprob.detach().exp())
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def step(self, loss: torch.Tensor) -> None:
        """One discriminator step on `loss` (after the student's step: the student's backward
        also reached D's parameters through the adversarial term, and those gradients are
        dropped here)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.discriminator)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
