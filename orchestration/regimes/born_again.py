"""Born-again networks: a method taught only by an earlier method's trained student.

Config: `distill.methods.<name>.teacher_snapshot: <earlier method>` (checked by
`check_born_again`). Phases: the snapshot's
method exports its student when it finishes (`SnapshotExport`); the born-again method of the
same seed has the orchestrator serve that student as teacher `snapshot-<phase>` for its
phase and reads only it (`SnapshotTeacher`), starting from weights of its own
(`INIT_SEED_STRIDE`). The results table is the run's usual one.
"""

from __future__ import annotations

from typing import Any, Optional

import torch.distributed as dist

from cluster import kd_phase
from orchestration.regime import MethodPhase
from students import Phase, PhaseHook, method_snapshots, refuse_zero3, snapshot_methods
from teachers import snapshot_teacher_name

INIT_SEED_STRIDE = 7919  # born-again generation g of seed s starts from the weights of seed s + g * stride


class SnapshotTeacher(PhaseHook):
    """The phase learns from the served snapshot of `teacher_phase` alone; rank 0 has it served
    for the phase (every rank waits) and retires it afterwards."""

    def __init__(self, teacher_phase: str):
        self.teacher_phase = teacher_phase

    def teachers(self) -> Optional[set[str]]:
        return {snapshot_teacher_name(self.teacher_phase)}

    def before_phase(self, phase: Phase) -> None:
        if phase.rank == 0:
            phase.control.serve_snapshot(self.teacher_phase)
        if dist.is_initialized():
            dist.barrier()

    def after_phase(self, phase: Phase) -> None:
        if phase.rank == 0:
            phase.control.drop_snapshot(self.teacher_phase)


class SnapshotExport(PhaseHook):
    """At the end of the phase (every rank's source closed) rank 0 hands the trained student to
    the orchestrator, for a later phase's `SnapshotTeacher` or a continual run's next task."""

    def after_phase(self, phase: Phase) -> None:
        if phase.rank == 0:
            weights = {k: v.detach().cpu().contiguous() for k, v in phase.model.state_dict().items()}
            phase.control.save_snapshot(phase.name, weights)


def generation(snapshots: dict[str, str], method: Optional[str]) -> int:
    """0 for a method without a snapshot teacher, else one more than its teacher's method."""
    return 1 + generation(snapshots, snapshots[method]) if method in snapshots else 0


def check_born_again(cfg: Any) -> None:
    """A snapshot teacher is served live, reads the student's view and is exported whole."""
    snapshots = snapshot_methods(cfg)
    if not snapshots:
        return
    if cfg.distill.mode == "offline":
        raise ValueError(f"distill.methods ({', '.join(snapshots)}): teacher_snapshot serves a trained student "
                         f"with Ray Serve; it needs distill.mode online")
    if cfg.data.cross_modal:
        raise ValueError(f"distill.methods ({', '.join(snapshots)}): a snapshot teacher is a student, which reads "
                         f"the students' input, but teachers are sent their own ({cfg.data.described} is "
                         f"cross-modal); use teacher_snapshot with one input")
    refuse_zero3(cfg, f"distill.methods ({', '.join(snapshots)}): teacher_snapshot exports the student's "
                      f"weights from rank 0")


def method_hooks(phase: MethodPhase) -> list[PhaseHook]:
    """The method whose student teaches a later method exports it; a born-again method reads
    only that student, served (export first: the hand-over order)."""
    snapshots = method_snapshots(phase.cfg.distill.methods)
    hooks: list[PhaseHook] = [SnapshotExport()] if phase.method in set(snapshots.values()) else []
    if phase.method in snapshots:
        hooks.append(SnapshotTeacher(kd_phase(snapshots[phase.method], phase.seed)))
    return hooks
