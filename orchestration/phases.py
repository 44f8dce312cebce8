"""Plain distillation, the run regime of every run without `continual` or `online`: which
students train, in which order, with what teachers and init, and the results table.

Per seed: one KD student per method (in the order the config lists them), then the no-KD
baseline. The method regimes listed in `METHOD_HOOKS` add their hooks to the phases of the
methods that ask for them (a born-again method is taught by the served snapshot of an earlier
method's student of the same seed, and starts from its own initial weights).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from cluster import kd_phase
from orchestration.config import RunConfig, run_folder
from orchestration.regime import MethodPhase, RunContext
from orchestration.regimes import adversarial, born_again, quantized, speculative
from orchestration.regimes.born_again import INIT_SEED_STRIDE, generation
from orchestration.regimes.quantized import ptq_lines
from orchestration.regimes.sequence_level import generated_for
from orchestration.results import retained_gain_lines, summarize
from students import (PhaseHook, RunControl, StudentJob, Term, Weighting, method_snapshots, needs_teacher,
                      preset_terms)
from teachers import ResolvedModel

# In calling order: a snapshot is exported before the one a phase learned from is retired.
METHOD_HOOKS: tuple[Callable[[MethodPhase], list[PhaseHook]], ...] = (
    born_again.method_hooks, adversarial.method_hooks, quantized.method_hooks, speculative.method_hooks)


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


def student_jobs(cfg: RunConfig, methods: dict[str, list[Term]], model: ResolvedModel, dataset_kind: str,
                 control: Optional[RunControl], stores: dict[str, str], generated: Optional[str] = None) -> list[StudentJob]:
    """Every phase of the run as a StudentJob, in training order; `generated` is the folder of
    the teachers' completions that `train_data: generated` methods fine-tune on."""
    snapshots = method_snapshots(cfg.distill.methods)
    method_cfgs = cfg.distill.methods or {}
    jobs = []
    for phase, seed, method in phase_names(cfg):
        terms = preset_terms("ce", 1.0) if method is None else methods[method]
        method_cfg = method_cfgs.get(method)
        hooks = tuple(hook for make in METHOD_HOOKS for hook in make(MethodPhase(cfg, method, seed)))
        reads_own_teachers = any(hook.teachers() for hook in hooks)  # a born-again phase's snapshot
        jobs.append(StudentJob(
            phase=phase, seed=seed, terms=terms, model=model, student=cfg.student,
            distill=method_cfg.distill_of(cfg.distill) if method_cfg is not None else cfg.distill,
            data=_data_of(cfg, method_cfg, generated), control=control,
            source="offline" if cfg.distill.mode == "offline" else "served", stores=stores,
            use_teachers=reads_own_teachers or (method is not None and bool(cfg.teachers) and needs_teacher(terms)),
            train=method is not None or dataset_kind != "embedding",  # an encoder's baseline is the untrained student
            init_seed=seed + INIT_SEED_STRIDE * generation(snapshots, method),
            export_dir=run_folder(cfg).child("students", phase),
            hooks=hooks, **teachers_of(cfg, method_cfg)))
    return jobs


def _data_of(cfg: RunConfig, method_cfg: Any, generated: Optional[str]) -> Any:
    """The data a phase trains on: the run's, or for sequence-level KD the generated completions
    (all of them: they were written for the students' prompts)."""
    if method_cfg is None or method_cfg.train_data != "generated":
        return cfg.data
    if generated is None:
        raise ValueError("a train_data: generated method needs the generated completions' folder")
    return cfg.data.model_copy(update={"generated": generated, "student_train_samples": None})


def teachers_of(cfg: RunConfig, method: Optional[Any]) -> dict[str, Any]:
    """The `teachers` and `weighting` of a phase: the method's own, else the run's."""
    teachers = method.teachers if method is not None else None
    weighting = (method.weighting if method is not None else None) or cfg.distill.weighting
    names = teachers or [t.name for t in cfg.teachers]
    return {"teachers": teachers, "weighting": Weighting.from_config(weighting, names)}


def dense_reference(cfg: RunConfig) -> tuple[str, list[str]]:
    """(the first KD method with dense soft targets, the top-k and sampled methods with the same
    terms): how much of dense KD's gain they keep. ("", []) when the run has no such pair."""
    methods = cfg.distill.methods or {}
    dense = next((name for name, m in methods.items() if m.target_form[0] == "dense" and not m.quantize), "")
    if not dense:
        return "", []
    return dense, [name for name, m in methods.items()
                   if m.target_form[0] in ("topk", "sampled") and m.terms == methods[dense].terms]


class PlainRegime:
    name = "distillation"

    def active(self, cfg: RunConfig) -> bool:
        return True

    def plan(self, ctx: RunContext) -> dict[str, list[StudentJob]]:
        generated = generated_for(ctx.cfg, ctx.dataset, ctx.teachers, ctx.done, ctx.console)
        return {"": student_jobs(ctx.cfg, ctx.methods, ctx.student_model, ctx.dataset.kind, ctx.control, ctx.stores,
                                 generated)}

    def results(self, cfg: RunConfig, phases: dict[str, dict[str, Any]],
                teachers: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        rows = summarize(teachers, phases)
        lines = retained_gain_lines(rows, *dense_reference(cfg)) + ptq_lines(
            phases, rows[-1]["metric"] if rows else "test_accuracy")
        return rows, "".join(f"{line}.\n" for line in lines)


PLAIN = PlainRegime()
