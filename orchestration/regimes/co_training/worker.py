"""A peer trainer's side of online co-training (runs inside a Ray Train worker).

Rank 0 publishes the student's weights every `refresh_every` steps through the run control
(on Ray an object-store reference: the orchestrator passes on the reference only; the peer's
endpoint replicas fetch the weights themselves). It keeps its trainer at most `max_staleness` steps ahead of
the weights its endpoint serves, waiting when further ahead, and reports the staleness it
saw and the time it waited. Other ranks follow rank 0 through DeepSpeed's collectives.

`CoTraining` is the hook that puts these into a peer phase's loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import torch.distributed as dist

from students import Phase, PhaseHook, RunControl
from teachers import live_step


@dataclass(frozen=True)
class OnlineRole:
    """What a phase of peer `peer` does in online co-training.

    Args:
        peer: this trainer's peer name (its endpoint is teacher `peer-<peer>`).
        round: the index of the phase's seed; peers start a round together.
        learns_from: the peers whose endpoints teach this one.
        publishes: whether some peer learns from this one (only then are weights published).
        refresh_every: steps between publications.
        max_staleness: most steps the trainer may run ahead of what its endpoint serves.
        timeout_s: how long to wait for peers (round start) or for the endpoint to load.
    """

    peer: str
    round: int
    learns_from: tuple[str, ...]
    publishes: bool
    refresh_every: int
    max_staleness: int
    timeout_s: float


class WeightPublisher:
    """Rank 0's publication of the student's weights, and the staleness bound."""

    def __init__(self, role: OnlineRole, control: RunControl, rank: int):
        self.role, self.control, self.rank = role, control, rank
        self.served_step: Optional[int] = None
        self.window_staleness = 0
        self.max_staleness_seen = 0
        self.blocked_s = 0.0
        self.published_step = -1
        self.publications = 0
        self.start_step = 0

    @property
    def active(self) -> bool:
        return self.rank == 0

    def start(self, module, step: int) -> None:
        """Wait for every peer to finish the round before, publish this round's first weights,
        then wait until the peers this one learns from serve this round."""
        if not self.active:
            return
        role = self.role
        self.start_step = step
        self.control.wait_round(role.peer, role.round, [], role.timeout_s)
        self._publish(module, step)
        self.control.wait_round(role.peer, role.round, list(role.learns_from), role.timeout_s)

    def after_step(self, module, step: int) -> None:
        """Publish on schedule; wait while the endpoint lags more than `max_staleness` steps."""
        if not (self.active and self.role.publishes):
            return
        role = self.role
        if step % role.refresh_every == 0:
            self._publish(module, step)
        self._poll_served()
        staleness = step - (self.served_step if self.served_step is not None else self.start_step)
        if staleness > role.max_staleness:
            wait_start = time.perf_counter()
            served = self.control.wait_served(role.peer, (role.round, step - role.max_staleness), role.timeout_s)
            self.blocked_s += time.perf_counter() - wait_start
            self.served_step = served[1]
            staleness = step - self.served_step
        self.window_staleness = max(self.window_staleness, staleness)
        self.max_staleness_seen = max(self.max_staleness_seen, staleness)

    def finish(self, module, step: int) -> None:
        """Publish the final weights (peers still training learn from them) and end the round."""
        if not self.active:
            return
        if self.role.publishes and self.published_step != step:
            self._publish(module, step)
        self.control.finish_round(self.role.peer, self.role.round)

    def metrics(self) -> dict[str, Any]:
        """`online/staleness_steps`: the most steps the trainer was ahead of its endpoint since
        the last record; `online/blocked_s`: time spent waiting on the bound, this phase."""
        if not (self.active and self.role.publishes):
            return {}
        out = {"online/staleness_steps": self.window_staleness, "online/blocked_s": self.blocked_s,
               "online/published_step": self.published_step}
        self.window_staleness = 0
        return out

    def summary(self) -> dict[str, Any]:
        """The phase's totals, for its final metrics (rank 0)."""
        if not (self.active and self.role.publishes):
            return {}
        return {"online_max_staleness": self.max_staleness_seen, "online_blocked_s": self.blocked_s,
                "online_publications": self.publications}

    def _publish(self, module, step: int) -> None:
        if not self.role.publishes:
            return
        weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        self.control.publish_weights(self.role.peer, (self.role.round, step), weights)
        self.published_step = step
        self.publications += 1

    def _poll_served(self) -> None:
        """Non-blocking: adopt the endpoint's served key when the last query has answered."""
        answered, key = self.control.served_key_nowait(self.role.peer)
        if answered and key is not None and key[0] == self.role.round:
            self.served_step = key[1]


class TargetLag:
    """How many of this trainer's steps behind it the live teachers' weights were, per teacher
    (`teacher/<name>/lag_steps`, the most since the last record). Peers step at about the same
    pace, so this is the consumer's view of staleness."""

    def __init__(self):
        self.window: dict[str, int] = {}

    def observe(self, targets, step: int) -> None:
        if targets is None:
            return
        for name, record in targets.records.items():
            key = live_step(record.teacher_version)
            if key is not None:
                self.window[name] = max(self.window.get(name, 0), step - key[1])

    def metrics(self) -> dict[str, Any]:
        out = {f"teacher/{name}/lag_steps": lag for name, lag in self.window.items()}
        self.window = {}
        return out


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
