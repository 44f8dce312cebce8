"""Speculative KD (Xu et al. 2024): the student proposes completions of each batch's prompts,
the teacher keeps what it would have sampled and replaces the first token it rejects; the
student learns on the interleaved sequences.

Config: `distill.methods.<name>.speculative` (`students.speculative` has the algorithm).
Phases: the method's phase gets `SpeculativeBatches`, which needs served teachers: a
speculative batch is made (and asked for) one at a time. Its metrics `speculative/*` are in
every record and in the final metrics (`speculative_acceptance`, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from students.hooks import Phase, PhaseHook
from students.speculative import SpeculativeBatches
from teachers.batch import Batch
from teachers.client import TeacherClient


class SpeculativeTraining(PhaseHook):
    def __init__(self, spec: Any, seed: int):
        self.spec, self.seed = spec, seed
        self.batches = None

    def plans_ahead(self) -> bool:
        return False

    def start(self, phase: Phase, extra_state: dict[str, Any]) -> None:
        if not isinstance(phase.source, TeacherClient):
            raise ValueError(f"phase {phase.name}: speculative KD needs served teachers (distill.mode online)")
        spec, source, rank = self.spec, phase.source, phase.rank

        def verify(sequences: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            answer = source.score_proposals(sequences.numpy(), start.numpy(), top_k=spec.top_k,
                                            temperature=spec.temperature, seed=int(sequences.sum()) + rank,
                                            teacher=spec.teacher)
            return torch.as_tensor(answer["first_rejected"]), torch.as_tensor(answer["replacement"])

        # the student's module proposes, outside DeepSpeed's forward
        self.batches = SpeculativeBatches(phase.model, verify, top_k=spec.top_k, max_rounds=spec.max_rounds,
                                          temperature=spec.temperature, seed=self.seed, rank=rank)

    def next_batch(self, batch: Batch, step: int) -> Batch:
        return self.batches(batch, step)

    def log_metrics(self) -> dict[str, Any]:
        return self.batches.metrics() if self.batches is not None else {}

    def final_metrics(self, phase: Phase, evaluate) -> dict[str, Any]:
        return {k.replace("/", "_"): v for k, v in self.log_metrics().items()}
