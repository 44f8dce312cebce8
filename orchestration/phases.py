"""The phases of a run: which students train, in which order, with what teacher and init.

Per seed: one KD student per method (in the order the config lists them), then the no-KD
baseline. A born-again method (`teacher_snapshot`) is taught by the served snapshot of an
earlier method's student of the same seed, and starts from its own initial weights.
"""

from __future__ import annotations

from typing import Any, Optional

from cluster.config import RunConfig
from students.job import StudentJob
from students.losses import Term, needs_teacher, preset_terms
from students.weighting import Weighting
from teachers.backend import ResolvedModel

INIT_SEED_STRIDE = 7919  # born-again generation g of seed s starts from the weights of seed s + g * stride


def phase_names(cfg: RunConfig) -> list[tuple[str, int, Optional[str]]]:
    """(phase, seed, KD method) in the order they train; the method is None for the baseline and
    "" for the run's single KD method."""
    methods = list(cfg.distill.methods) if cfg.distill.methods else [""]
    out = []
    for seed in cfg.run.seeds:
        out += [(kd_phase(m, seed), seed, m) for m in methods]
        if cfg.run.baseline:
            out.append((f"baseline-seed{seed}", seed, None))
    return out


def kd_phase(method: str, seed: int) -> str:
    return f"kd-{method}-seed{seed}" if method else f"kd-seed{seed}"


def generation(snapshots: dict[str, str], method: Optional[str]) -> int:
    """0 for a method without a snapshot teacher, else one more than its teacher's method."""
    return 1 + generation(snapshots, snapshots[method]) if method in snapshots else 0


def method_snapshots(cfg: RunConfig) -> dict[str, str]:
    """{born-again method: the method whose student (same seed) is its teacher}."""
    return {name: m.teacher_snapshot for name, m in (cfg.distill.methods or {}).items() if m.teacher_snapshot}


def student_jobs(cfg: RunConfig, methods: dict[str, list[Term]], model: ResolvedModel, dataset_kind: str,
                 orchestrator: Any, stores: dict[str, str]) -> list[StudentJob]:
    """Every phase of the run as a StudentJob, in training order."""
    snapshots = method_snapshots(cfg)
    exported = set(snapshots.values())
    method_cfgs = cfg.distill.methods or {}
    offline = cfg.distill.mode == "offline"
    jobs = []
    for phase, seed, method in phase_names(cfg):
        terms = preset_terms("ce", 1.0) if method is None else methods[method]
        served_by = kd_phase(snapshots[method], seed) if method in snapshots else None
        jobs.append(StudentJob(
            phase=phase, seed=seed, terms=terms, model=model, student=cfg.student, distill=cfg.distill,
            data=cfg.data, orchestrator=orchestrator, source="offline" if offline else "served", stores=stores,
            use_teachers=served_by is not None or (method is not None and bool(cfg.teachers) and needs_teacher(terms)),
            teacher_snapshot=served_by, export_snapshot=method in exported,
            train=method is not None or dataset_kind != "embedding",  # an encoder's baseline is the untrained student
            init_seed=seed + INIT_SEED_STRIDE * generation(snapshots, method),
            **_teachers_of(cfg, method_cfgs.get(method))))
    return jobs


def _teachers_of(cfg: RunConfig, method: Optional[Any]) -> dict[str, Any]:
    """The `teachers` and `weighting` of a phase: the method's own, else the run's."""
    teachers = method.teachers if method is not None else None
    weighting = (method.weighting if method is not None else None) or cfg.distill.weighting
    names = teachers or [t.name for t in cfg.teachers]
    return {"teachers": teachers, "weighting": Weighting.from_config(weighting, names)}
