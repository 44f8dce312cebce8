"""Synthetic inputs where teacher and student disagree (plain torch).

A generator G maps noise z to inputs inside the real data's per-feature range. Each step:
the student learns from the teachers' soft targets on G's last samples (sent to the teachers
one step earlier, so their answer arrives while the student trains), then G takes one step
toward inputs where the student's distribution is furthest from the teachers':

    loss_G = -KL(p_teacher(x) || p_student(x)),  x = G(z)

with the teachers' answer for x held fixed. Served teachers give no input gradients, so
this is the black-box form of data-free adversarial distillation (Fang et al. 2019, "Data-
Free Adversarial Distillation"; Micaelli and Storkey 2019, "Zero-shot Knowledge Transfer via
Adversarial Belief Matching"): G follows the student's side of the disagreement, and the
teachers label every input it proposes. G's gradients are averaged over the data-parallel
workers, so every rank keeps the same G; each rank draws its own noise.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ingest import Batch, BatchId
from students.discriminator import average_gradients
from students.teacher_merge import stacked_logprob, static_weights


class Generator(nn.Module):
    """An MLP from noise [B, z_dim] to inputs [B, F] with each feature in [low, high]."""

    def __init__(self, z_dim: int, hidden: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, len(low)))
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("span", torch.as_tensor(high - low, dtype=torch.float32))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.low + self.span * torch.sigmoid(self.net(z))


class SyntheticInputs:
    """The generator, its optimizer, its noise and its alternating step.

    Args:
        low, high: [F] the real training inputs' per-feature minimum and maximum.
        samples: synthetic samples per step and worker.
        z_dim, hidden: the generator's noise width and hidden width.
        lr: its Adam learning rate.
        device: the student's device.
        seed: its initial weights' seed (the same on every rank); `rank` offsets the noise.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, *, samples: int = 16, z_dim: int = 32, hidden: int = 128,
                 lr: float = 1e-3, device: Any = "cpu", seed: int = 0, rank: int = 0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = Generator(z_dim, hidden, low, high)
        self.generator = generator.to(device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.samples, self.z_dim, self.device = samples, z_dim, torch.device(device)
        self.noise = torch.Generator().manual_seed(seed * 1000 + rank)

    def sample(self) -> tuple[torch.Tensor, np.ndarray]:
        """Fresh noise and the inputs G makes of it (float32, for the teachers and the student)."""
        z = torch.randn(self.samples, self.z_dim, generator=self.noise).to(self.device)
        with torch.no_grad():
            x = self.generator(z)
        return z, x.float().cpu().numpy()

    def step(self, z: torch.Tensor, student: Callable[[torch.Tensor], torch.Tensor], teacher_logprob: torch.Tensor,
             temperature: float) -> torch.Tensor:
        """One step of G toward disagreement on the noise `z` the teachers answered for.
        `student` maps inputs to logits without touching the student's gradients."""
        x = self.generator(z)
        student_logprob = F.log_softmax(student(x).float() / temperature, dim=-1)
        disagreement = F.kl_div(student_logprob, teacher_logprob.to(x.device), log_target=True, reduction="batchmean")
        loss = -disagreement
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.generator)
        self.optimizer.step()
        return disagreement.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise.set_state(state["noise"])


def frozen_forward(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module`'s forward with its parameters detached: gradients reach the inputs only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, {**params, **buffers}, (x.to(next(iter(params.values())).dtype),))
    return forward


class SyntheticStream:
    """Keeps one batch of generated inputs in flight to the teachers and hands the answered one
    to the next training step, so the teachers' latency hides behind a student step.

    Args:
        inputs: the generator (SyntheticInputs).
        client: the worker's teacher client (`request(batch)`, `targets_for(batch)`).
        temperature: the run's KD temperature.
        weight: the weight of the synthetic KD term.
        name: a prefix that makes the batch ids unique in the run (phase and rank).
    """

    def __init__(self, inputs: SyntheticInputs, client: Any, temperature: float, weight: float, name: str):
        self.inputs, self.client, self.temperature, self.weight, self.name = inputs, client, temperature, weight, name
        self._pending: tuple[torch.Tensor, Batch] | None = None
        self._answered: tuple[torch.Tensor, torch.Tensor] | None = None

    def request(self, step: int) -> None:
        z, x = self.inputs.sample()
        batch = Batch.of_inputs(BatchId.made_by(f"{self.name}-syn{step}"), x)
        self.client.request(batch)
        self._pending = (z, batch)

    def loss(self, student: Callable[[torch.Tensor], torch.Tensor], device: Any) -> dict[str, torch.Tensor]:
        """T^2 KL(teachers || student) on the answered synthetic batch ({} before the first)."""
        self._answered = None
        if self._pending is None:
            return {}
        z, batch = self._pending
        targets = self.client.targets_for(batch)
        if targets is None:  # no teacher answered (all removed): nothing to learn on these inputs
            return {}
        weights = static_weights(targets).log()[:, None, None]
        teacher_logprob = torch.logsumexp(stacked_logprob(targets, self.temperature) + weights, dim=0).to(device)
        self._answered = (z, teacher_logprob)
        logits = student(torch.from_numpy(batch.x).to(device))
        student_logprob = F.log_softmax(logits.float() / self.temperature, dim=-1)
        kd = F.kl_div(student_logprob, teacher_logprob, log_target=True, reduction="batchmean") * self.temperature ** 2
        return {"synthetic_kd": kd, "weighted": self.weight * kd}

    def step_generator(self, student: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """The generator's step on the batch the student just learned from."""
        if self._answered is None:
            return {}
        z, teacher_logprob = self._answered
        return {"generator_disagreement": self.inputs.step(z, student, teacher_logprob, self.temperature)}
