"""Names a run gives its phases, read back by the results table and the scaling-law history.

A phase is `<method part>-seed<seed>`: `kd-seed0` (the run's KD method), `kd-dkd-seed0`
(method `dkd`), `baseline-seed0` (the no-KD student); continual and co-training phases add
their task or peer to the method part.
"""

from __future__ import annotations


def phase_kind(phase: str) -> str:
    """`kd-seed0` -> "kd", `kd-dkd-seed0` -> "kd:dkd", `baseline-seed0` -> "baseline"."""
    return method_kind(phase.rsplit("-seed", 1)[0])


def method_kind(stem: str) -> str:
    """A phase name's method part as a results kind: `kd-dkd` -> "kd:dkd" ("kd", "baseline" stay)."""
    return "kd:" + stem[3:] if stem.startswith("kd-") else stem


def kd_phase(method: str, seed: int) -> str:
    """The phase of KD method `method` ("" for the run's single one) and `seed`."""
    return f"kd-{method}-seed{seed}" if method else f"kd-seed{seed}"


def online_phase(peer: str, seed: int, mutual: bool) -> str:
    """`mutual-a-seed0` (trained with its peers), `alone-a-seed0` (the same peer on labels only)."""
    return f"{'mutual' if mutual else 'alone'}-{peer}-seed{seed}"
