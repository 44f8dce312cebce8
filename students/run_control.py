"""The run control: everything a train worker may ask of the run it belongs to.

A worker learns its teacher set, reports metrics, asks whether to stop, announces a resume,
and, where its regime needs it, hands over or fetches student weights (born-again and
continual snapshots, co-training publications). It does so only through this interface:
`orchestration.ray_run_control.RayRunControl` is the one adapter to the run's orchestrator actor;
`LocalRunControl` below is an in-process implementation for unit tests and single-process use.
Calls named `..._nowait` never block: they return what the last answered question said.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from teachers import TeacherSet, TeacherSetSource

Key = tuple[int, int]  # (round, step) of a co-training publication


class RunControl(TeacherSetSource, Protocol):
    """Args of every call are plain data; weights are `{name: tensor}` state dicts."""

    # -- teachers (TeacherSetSource: teacher_set, teacher_set_version_nowait, teacher_lost) --
    def teacher_apps(self) -> list[Any]:
        """How each current teacher is built (`teachers.deployment.TeacherAppArgs`)."""

    # -- progress -------------------------------------------------------------------------
    def report(self, record: dict[str, Any]) -> None:
        """A metric record (fire and forget)."""

    def stop_requested_nowait(self) -> bool:
        """Whether `distillery stop` was asked, as last heard."""

    def resumed(self, phase: str, step: int, trainer: Optional[str]) -> int:
        """The phase resumed at `step`; returns the steps trained before that are trained again."""

    # -- snapshots: born-again teachers, continual tasks -----------------------------------
    def save_snapshot(self, phase: str, weights: dict[str, Any]) -> None: ...

    def snapshot_weights(self, phase: str) -> dict[str, Any]: ...

    def serve_snapshot(self, phase: str) -> None:
        """Serve the saved student of `phase` as a teacher (returns once it is in the set)."""

    def drop_snapshot(self, phase: str) -> None: ...

    def store_memory_targets(self, phase: str, column: str, value: int, samples: int) -> None: ...

    def memory_store(self, phase: str) -> str:
        """The folder of the memory targets `phase` stored (an offline store)."""

    # -- co-training ------------------------------------------------------------------------
    def publish_weights(self, peer: str, key: Key, weights: dict[str, Any]) -> None:
        """Publish a peer's weights (fire and forget)."""

    def served_key_nowait(self, peer: str) -> tuple[bool, Optional[Key]]:
        """(answered, the key the peer's endpoint serves) as last heard."""

    def wait_served(self, peer: str, key: Key, timeout_s: float) -> Key: ...

    def wait_round(self, peer: str, round_: int, teachers: list[str], timeout_s: float) -> None: ...

    def finish_round(self, peer: str, round_: int) -> None: ...


class LocalRunControl:
    """An in-process run: a fixed or edited teacher set, records kept in a list, snapshots in
    a dict, a single co-training peer that serves what it publishes at once."""

    def __init__(self, teacher_set: TeacherSet = TeacherSet(), apps: Optional[list[Any]] = None):
        self._teacher_set = teacher_set
        self.apps = apps or []
        self.records: list[dict[str, Any]] = []
        self.stop = False
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.served: set[str] = set()
        self.memory: dict[str, str] = {}
        self.published: dict[str, Key] = {}
        self.rounds: set[tuple[str, int]] = set()
        self.resumes: list[tuple[str, int]] = []

    def set_teacher_set(self, teacher_set: TeacherSet) -> None:
        self._teacher_set = teacher_set

    def teacher_set(self) -> TeacherSet:
        return self._teacher_set

    def teacher_set_version_nowait(self) -> Optional[int]:
        return self._teacher_set.version

    def teacher_lost(self, name: str, reason: str) -> TeacherSet:
        if name in self._teacher_set.teachers:
            self._teacher_set = self._teacher_set.without_teacher(name)
        return self._teacher_set

    def teacher_apps(self) -> list[Any]:
        return [app for app in self.apps if app.name in self._teacher_set.teachers]

    def report(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def stop_requested_nowait(self) -> bool:
        return self.stop

    def resumed(self, phase: str, step: int, trainer: Optional[str]) -> int:
        self.resumes.append((phase, step))
        return 0

    def save_snapshot(self, phase: str, weights: dict[str, Any]) -> None:
        self.snapshots[phase] = weights

    def snapshot_weights(self, phase: str) -> dict[str, Any]:
        if phase not in self.snapshots:
            raise FileNotFoundError(f"no snapshot of phase {phase!r}: that phase must finish first")
        return self.snapshots[phase]

    def serve_snapshot(self, phase: str) -> None:
        self.served.add(phase)

    def drop_snapshot(self, phase: str) -> None:
        self.served.discard(phase)

    def store_memory_targets(self, phase: str, column: str, value: int, samples: int) -> None:
        raise NotImplementedError("stored memory targets need the run's orchestrator (RayRunControl)")

    def memory_store(self, phase: str) -> str:
        if phase not in self.memory:
            raise FileNotFoundError(f"no stored memory targets of phase {phase!r}")
        return self.memory[phase]

    def publish_weights(self, peer: str, key: Key, weights: dict[str, Any]) -> None:
        self.published[peer] = key

    def served_key_nowait(self, peer: str) -> tuple[bool, Optional[Key]]:
        return True, self.published.get(peer)

    def wait_served(self, peer: str, key: Key, timeout_s: float) -> Key:
        return self.published.get(peer, key)

    def wait_round(self, peer: str, round_: int, teachers: list[str], timeout_s: float) -> None:
        """A single peer never waits."""

    def finish_round(self, peer: str, round_: int) -> None:
        self.rounds.add((peer, round_))
