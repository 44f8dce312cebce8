"""The teacher set: which teachers feed the students, at which weight, at which version."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional


def app_name(teacher: str) -> str:
    """The Serve application that hosts a teacher."""
    return f"teacher-{teacher}"


def snapshot_teacher_name(phase: str) -> str:
    """The teacher that serves the frozen student of `phase` (born-again distillation)."""
    name = f"snapshot-{phase}"
    return name if len(name) <= 48 else f"snapshot-{hashlib.sha256(phase.encode()).hexdigest()[:16]}"


def peer_teacher_name(peer: str) -> str:
    """The teacher that serves the live weights of peer trainer `peer` (online co-training)."""
    return f"{PEER_PREFIX}{peer}"


PEER_PREFIX = "peer-"


def live_version(teacher: str, key: tuple[int, int]) -> str:
    """The record version of a live teacher's weights from round `key[0]`, step `key[1]`."""
    return f"live:{teacher}@r{key[0]}s{key[1]}"


def live_step(version: str) -> Optional[tuple[int, int]]:
    """(round, step) of a live teacher's record version; None for other teachers."""
    if not version.startswith("live:") or "@r" not in version:
        return None
    round_, _, step = version.rpartition("@r")[2].partition("s")
    return int(round_), int(step)


@dataclass(frozen=True)
class TeacherEntry:
    name: str
    weight: float
    output_space: str
    num_classes: int
    model_version: str
    parameters: int = 0
    endpoint: Optional[Any] = None  # an EndpointSpec for gRPC teachers; None for Serve apps
    feature_shapes: dict[str, list[int]] = field(default_factory=dict)  # per-sample shape of each sent feature
    live: bool = False  # weights refreshed while it teaches: records carry `<model_version>@r<round>s<step>`

    @property
    def app_name(self) -> str:
        return app_name(self.name)


@dataclass(frozen=True)
class TeacherSet:
    """An immutable snapshot; every change makes a new one with `version + 1`."""

    version: int = 0
    teachers: dict[str, TeacherEntry] = field(default_factory=dict)

    def weights(self) -> dict[str, float]:
        return {name: entry.weight for name, entry in self.teachers.items()}

    def with_teacher(self, entry: TeacherEntry) -> "TeacherSet":
        return TeacherSet(self.version + 1, {**self.teachers, entry.name: entry})

    def only(self, names: Optional[set[str]]) -> "TeacherSet":
        """The same version restricted to `names` (all teachers when None)."""
        if names is None:
            return self
        return TeacherSet(self.version, {k: v for k, v in self.teachers.items() if k in names})

    def with_weight(self, name: str, weight: float) -> "TeacherSet":
        from dataclasses import replace

        return TeacherSet(self.version + 1, {**self.teachers, name: replace(self.teachers[name], weight=weight)})

    def without_teacher(self, name: str) -> "TeacherSet":
        return TeacherSet(self.version + 1, {k: v for k, v in self.teachers.items() if k != name})
