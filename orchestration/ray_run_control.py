"""The Ray adapter of the run control (`students.run_control.RunControl`): the only code a
train worker runs that talks to the run's orchestrator actor.

Blocking questions are `ray.get` of one actor call; `..._nowait` questions keep one call in
flight per kind and return its answer once it has arrived (the last answer until then), so a
step boundary never waits on the orchestrator.
"""

from __future__ import annotations

from typing import Any, Optional

import ray

from students import Key
from teachers import TeacherSet

_UNANSWERED = object()


class _Poll:
    """One non-blocking question: sent, read when answered, sent again."""

    def __init__(self, ask):
        self._ask = ask
        self._ref = None

    def __call__(self) -> Any:
        if self._ref is None:
            self._ref = self._ask()
            return _UNANSWERED
        if not ray.wait([self._ref], timeout=0)[0]:
            return _UNANSWERED
        answer = ray.get(self._ref)
        self._ref = self._ask()
        return answer


class RayRunControl:
    """Args:
        orchestrator: the run's orchestrator actor handle (named `<run>` in namespace `distillery`).
    """

    def __init__(self, orchestrator: Any):
        self.orchestrator = orchestrator
        self._polls: dict[str, _Poll] = {}
        self._stop_seen = False

    def __getstate__(self) -> dict[str, Any]:  # shipped to every worker: in-flight questions stay behind
        return {"orchestrator": self.orchestrator}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["orchestrator"])

    def _nowait(self, key: str, ask) -> Any:
        if key not in self._polls:
            self._polls[key] = _Poll(ask)
        return self._polls[key]()

    # -- teachers -------------------------------------------------------------------------------
    def teacher_set(self) -> TeacherSet:
        return ray.get(self.orchestrator.teacher_set.remote())

    def teacher_set_version_nowait(self) -> Optional[int]:
        answer = self._nowait("version", self.orchestrator.teacher_set_version.remote)
        return None if answer is _UNANSWERED else answer

    def teacher_lost(self, name: str, reason: str) -> TeacherSet:
        return ray.get(self.orchestrator.teacher_lost.remote(name, reason))

    def teacher_apps(self) -> list[Any]:
        return ray.get(self.orchestrator.teacher_apps.remote())

    # -- progress -------------------------------------------------------------------------------
    def report(self, record: dict[str, Any]) -> None:
        self.orchestrator.record_progress.remote(record)

    def stop_requested_nowait(self) -> bool:
        if not self._stop_seen:
            answer = self._nowait("stop", self.orchestrator.stop_requested.remote)
            self._stop_seen = answer is not _UNANSWERED and bool(answer)
        return self._stop_seen

    def resumed(self, phase: str, step: int, trainer: Optional[str]) -> int:
        return int(ray.get(self.orchestrator.resumed.remote(phase, step, trainer)))

    # -- snapshots ------------------------------------------------------------------------------
    def save_snapshot(self, phase: str, weights: dict[str, Any]) -> None:
        ray.get(self.orchestrator.save_snapshot.remote(phase, weights))

    def snapshot_weights(self, phase: str) -> dict[str, Any]:
        return ray.get(self.orchestrator.snapshot_weights.remote(phase))

    def serve_snapshot(self, phase: str) -> None:
        ray.get(self.orchestrator.serve_snapshot.remote(phase))

    def drop_snapshot(self, phase: str) -> None:
        ray.get(self.orchestrator.drop_snapshot.remote(phase))

    def store_memory_targets(self, phase: str, column: str, value: int, samples: int) -> None:
        ray.get(self.orchestrator.store_memory_targets.remote(phase, column, value, samples))

    def memory_store(self, phase: str) -> str:
        return ray.get(self.orchestrator.memory_store.remote(phase))

    # -- co-training ----------------------------------------------------------------------------
    def publish_weights(self, peer: str, key: Key, weights: dict[str, Any]) -> None:
        # only the reference passes through the orchestrator; the peer's replicas fetch the weights
        self.orchestrator.publish_weights.remote(peer, key, [ray.put(weights)])

    def served_key_nowait(self, peer: str) -> tuple[bool, Optional[Key]]:
        answer = self._nowait(f"served/{peer}", lambda: self.orchestrator.served_key.remote(peer))
        return (False, None) if answer is _UNANSWERED else (True, answer)

    def wait_served(self, peer: str, key: Key, timeout_s: float) -> Key:
        return ray.get(self.orchestrator.wait_served.remote(peer, key, timeout_s))

    def wait_round(self, peer: str, round_: int, teachers: list[str], timeout_s: float) -> None:
        ray.get(self.orchestrator.wait_round.remote(peer, round_, teachers, timeout_s))

    def finish_round(self, peer: str, round_: int) -> None:
        ray.get(self.orchestrator.finish_round.remote(peer, round_))
