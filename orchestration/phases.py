"""The phases of a run: which students train, in which order, with what teacher and init.

Per seed: one KD student per method (in the order the config lists them), then the no-KD
baseline. A born-again method (`teacher_snapshot`) is taught by the served snapshot of an
earlier method's student of the same seed, and starts from its own initial weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from orchestration.config import RunConfig
from orchestration.regimes.adversarial import SyntheticTraining
from orchestration.regimes.born_again import (SnapshotExport, SnapshotTeacher, generation, INIT_SEED_STRIDE,
                                              method_snapshots)
from orchestration.regimes.quantized import PostTrainingQuantization, QuantizedTraining
from orchestration.regimes.speculative import SpeculativeTraining
from students import PhaseHook, RunControl, StudentJob, Term, Weighting, needs_teacher, preset_terms
from teachers import ResolvedModel


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


def student_jobs(cfg: RunConfig, methods: dict[str, list[Term]], model: ResolvedModel, dataset_kind: str,
                 control: Optional[RunControl], stores: dict[str, str], generated: Optional[str] = None) -> list[StudentJob]:
    """Every phase of the run as a StudentJob, in training order; `generated` is the folder of
    the teachers' completions that `train_data: generated` methods fine-tune on."""
    snapshots = method_snapshots(cfg.distill.methods)
    exported = set(snapshots.values())
    method_cfgs = cfg.distill.methods or {}
    offline = cfg.distill.mode == "offline"
    ptq_bits = tuple(sorted({m.quantize for m in method_cfgs.values() if m.quantize}, reverse=True))
    jobs = []
    for phase, seed, method in phase_names(cfg):
        terms = preset_terms("ce", 1.0) if method is None else methods[method]
        served_by = kd_phase(snapshots[method], seed) if method in snapshots else None
        method_cfg = method_cfgs.get(method)
        hooks = _method_hooks(cfg, method, method_cfg, seed, served_by, method in exported)
        if method is None and ptq_bits:
            hooks.append(PostTrainingQuantization(ptq_bits))
        jobs.append(StudentJob(
            phase=phase, seed=seed, terms=terms, model=model, student=cfg.student,
            distill=method_cfg.distill_of(cfg.distill) if method_cfg is not None else cfg.distill,
            data=_data_of(cfg, method_cfg, generated), control=control,
            source="offline" if offline else "served", stores=stores,
            use_teachers=served_by is not None or (method is not None and bool(cfg.teachers) and needs_teacher(terms)),
            train=method is not None or dataset_kind != "embedding",  # an encoder's baseline is the untrained student
            init_seed=seed + INIT_SEED_STRIDE * generation(snapshots, method),
            export_dir=(str(Path(cfg.run.output_dir).resolve() / cfg.run.name / "students" / phase)
                        if cfg.data.dataset == "stdlib_functions" else None),
            hooks=tuple(hooks), **teachers_of(cfg, method_cfg)))
    return jobs


def _data_of(cfg: RunConfig, method_cfg: Any, generated: Optional[str]) -> Any:
    """The data a phase trains on: the run's, or for sequence-level KD the generated completions
    (all of them: they were written for the students' prompts)."""
    if method_cfg is None or method_cfg.train_data != "generated":
        return cfg.data
    if generated is None:
        raise ValueError("a train_data: generated method needs the generated completions' folder")
    return cfg.data.model_copy(update={"generated": generated, "student_train_samples": None})


def _method_hooks(cfg: RunConfig, method: Optional[str], method_cfg: Optional[Any], seed: int,
                  served_by: Optional[str], exported: bool) -> list[PhaseHook]:
    """The regimes a KD method's phase belongs to, as hooks (the hand-over order: export
    the snapshot before retiring the one this phase learned from)."""
    hooks: list[PhaseHook] = [SnapshotExport()] if exported else []
    if served_by is not None:
        hooks.append(SnapshotTeacher(served_by))
    generator = _generator_of(cfg, method, method_cfg)
    if generator is not None:
        hooks.append(SyntheticTraining(generator, seed))
    if method_cfg is not None and method_cfg.quantize:
        hooks.append(QuantizedTraining(method_cfg.quantize))
    if method_cfg is not None and method_cfg.speculative is not None:
        hooks.append(SpeculativeTraining(method_cfg.speculative, seed))
    return hooks


def teachers_of(cfg: RunConfig, method: Optional[Any]) -> dict[str, Any]:
    """The `teachers` and `weighting` of a phase: the method's own, else the run's."""
    teachers = method.teachers if method is not None else None
    weighting = (method.weighting if method is not None else None) or cfg.distill.weighting
    names = teachers or [t.name for t in cfg.teachers]
    return {"teachers": teachers, "weighting": Weighting.from_config(weighting, names)}


def _generator_of(cfg: RunConfig, method: Optional[str], method_cfg: Optional[Any]) -> Optional[Any]:
    """A KD method's generator: its own, else the run's (never the baseline's)."""
    if method is None:
        return None
    return (method_cfg.generator if method_cfg is not None else None) or cfg.distill.generator


