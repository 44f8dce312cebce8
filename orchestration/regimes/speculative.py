"""Speculative KD (Xu et al. 2024): the student proposes completions of each batch's prompts,
the teacher keeps what it would have sampled and replaces the first token it rejects; the
student learns on the interleaved sequences.

Config: `distill.methods.<name>.speculative` (`students.config.SpeculativeConfig`, checked by
`check_speculative`; `students.speculative_batches` has the algorithm).
Phases: the method's phase gets `SpeculativeBatches`, which needs served teachers: a
speculative batch is made (and asked for) one at a time. Its metrics `speculative/*` are in
every record and in the final metrics (`speculative_acceptance`, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from ingest import Batch
from orchestration.regime import MethodPhase
from students import Phase, PhaseHook, SpeculativeBatches, refuse_zero3
from teachers import TeacherClient


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


def check_speculative(cfg: Any) -> None:
    methods = cfg.distill.methods or {}
    speculative = sorted(n for n, m in methods.items() if m.speculative)
    teachers = [t.name for t in cfg.teachers]
    for name in speculative:
        method = methods[name]
        if not cfg.data.language_model or method.train_data == "generated" or not cfg.teachers:
            raise ValueError(f"distill.methods.{name}.speculative: speculative KD completes the prompts of "
                             f"language-model data with the student and the run's teachers (train_data: real)")
        if method.speculative.teacher and method.speculative.teacher not in teachers:
            raise ValueError(f"distill.methods.{name}.speculative.teacher: {method.speculative.teacher!r} is not "
                             f"a teacher of the run")
        if not any(t.name not in ("ce", "byot") for t in method.terms):
            raise ValueError(f"distill.methods.{name}.terms: speculative KD learns the interleaved text from the "
                             f"teacher; give a KD term (kd, reverse_kl, jsd)")
    if speculative:
        refuse_zero3(cfg, f"distill.methods ({', '.join(speculative)}): the student proposes tokens with its "
                          f"full weights on every rank")


def method_hooks(phase: MethodPhase) -> list[PhaseHook]:
    method = phase.method_cfg
    return [SpeculativeTraining(method.speculative, phase.seed)] if method is not None and method.speculative else []
