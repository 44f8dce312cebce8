"""Online co-training (deep mutual learning): peer students train at once and teach each
other through live endpoints that serve each peer's newest weights.

Config: `online` (`cluster.config.OnlineConfig`: peers, who learns from whom, refresh and
staleness bounds). Phases (`online_jobs`): per seed a round in which every peer trains with
its peers, then with `run.baseline` every peer alone on labels; each peer has its own Ray
Train run (`orchestration.run.train_peers`). Worker hook: `CoTraining` publishes the peer's
weights and keeps it within `max_staleness` steps of what its endpoint serves. Results:
`orchestration.online_results`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch.distributed as dist

from orchestration.regimes.born_again import INIT_SEED_STRIDE
from students.hooks import Phase, PhaseHook
from students.job import StudentJob
from students.losses import Term, preset_terms
from students.online import OnlineRole, TargetLag, WeightPublisher
from students.run_control import RunControl
from students.weighting import Weighting
from teachers.backend import ResolvedModel
from teachers.teacher_set import peer_teacher_name


class CoTraining(PhaseHook):
    def __init__(self, role: OnlineRole):
        self.role = role
        self.publisher: Optional[WeightPublisher] = None
        self.lag = TargetLag()

    def before_phase(self, phase: Phase) -> None:
        """Rank 0 publishes the round's first weights and waits for the peers; every rank waits for rank 0."""
        self.publisher = WeightPublisher(self.role, phase.control, phase.rank)
        self.publisher.start(phase.model, phase.step)
        if dist.is_initialized():
            dist.barrier()

    def after_step(self, phase: Phase, step: int, targets) -> dict:
        self.lag.observe(targets, step)
        self.publisher.after_step(phase.model, step)
        return {}

    def log_metrics(self) -> dict[str, Any]:
        return {**self.publisher.metrics(), **self.lag.metrics()}

    def after_training(self, phase: Phase) -> None:
        self.publisher.finish(phase.model, phase.step)

    def final_metrics(self, phase: Phase, evaluate) -> dict[str, Any]:
        return self.publisher.summary()

    def on_done_before(self, control: RunControl, rank: int) -> None:
        """A resumed peer trainer tells the (new) orchestrator which rounds it finished before, so
        that peers still in those rounds are not taught by its next round's weights."""
        if rank == 0:
            control.finish_round(self.role.peer, self.role.round)


# --- phases -------------------------------------------------------------------------------------
def online_phase(peer: str, seed: int, mutual: bool) -> str:
    """`mutual-a-seed0` (trained with its peers), `alone-a-seed0` (the same peer on labels only)."""
    return f"{'mutual' if mutual else 'alone'}-{peer}-seed{seed}"


def online_jobs(cfg: Any, terms: list[Term], models: dict[str, ResolvedModel],
                control: Optional[RunControl]) -> dict[str, list[StudentJob]]:
    """An online co-training run: every peer's phases, in the order its own trainer runs them.

    Per seed (a round) each peer trains with its peers at the same time, learning from the
    live endpoints of the peers in its `learns_from` and publishing its weights to its own;
    then, with `run.baseline`, every peer trains alone on labels for each seed. Peer i of seed s
    starts from the same weights in both (init seed s + i * INIT_SEED_STRIDE).
    """
    online = cfg.online
    taught = {t for p in online.peers for t in online.teachers_of(p.name)}
    jobs: dict[str, list[StudentJob]] = {}
    for index, peer in enumerate(online.peers):
        teachers = online.teachers_of(peer.name)
        names = [peer_teacher_name(t) for t in teachers]
        common = dict(model=models[peer.name], student=cfg.student, distill=cfg.distill, data=cfg.data,
                      control=control, trainer=peer.name)
        mutual = [StudentJob(
            phase=online_phase(peer.name, seed, True), seed=seed, init_seed=seed + INIT_SEED_STRIDE * index,
            terms=terms if teachers else preset_terms("ce", 1.0), use_teachers=bool(teachers),
            teachers=names, weighting=Weighting.from_config(cfg.distill.weighting, names),
            hooks=(CoTraining(OnlineRole(peer=peer.name, round=round_, learns_from=tuple(teachers),
                                         publishes=peer.name in taught, refresh_every=online.refresh_every,
                                         max_staleness=online.max_staleness, timeout_s=online.start_timeout_s)),),
            **common)
            for round_, seed in enumerate(cfg.run.seeds)]
        alone = [StudentJob(phase=online_phase(peer.name, seed, False), seed=seed,
                            init_seed=seed + INIT_SEED_STRIDE * index, terms=preset_terms("ce", 1.0),
                            use_teachers=False, **common)
                 for seed in cfg.run.seeds] if cfg.run.baseline else []
        jobs[peer.name] = mutual + alone
    return jobs
