"""The phases of a run: which students train, in which order, with what teacher and init.

Per seed: one KD student per method (in the order the config lists them), then the no-KD
baseline. A born-again method (`teacher_snapshot`) is taught by the served snapshot of an
earlier method's student of the same seed, and starts from its own initial weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from cluster.config import RunConfig
from students.job import StudentJob
from students.losses import Term, needs_teacher, preset_terms
from students.online import OnlineRole
from students.weighting import Weighting
from teachers.backend import ResolvedModel
from teachers.teacher_set import peer_teacher_name

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
                 orchestrator: Any, stores: dict[str, str], generated: Optional[str] = None) -> list[StudentJob]:
    """Every phase of the run as a StudentJob, in training order; `generated` is the folder of
    the teachers' completions that `train_data: generated` methods fine-tune on."""
    snapshots = method_snapshots(cfg)
    exported = set(snapshots.values())
    method_cfgs = cfg.distill.methods or {}
    offline = cfg.distill.mode == "offline"
    ptq_bits = tuple(sorted({m.quantize for m in method_cfgs.values() if m.quantize}, reverse=True))
    jobs = []
    for phase, seed, method in phase_names(cfg):
        terms = preset_terms("ce", 1.0) if method is None else methods[method]
        served_by = kd_phase(snapshots[method], seed) if method in snapshots else None
        jobs.append(StudentJob(
            phase=phase, seed=seed, terms=terms, model=model, student=cfg.student,
            distill=method_cfgs[method].distill_of(cfg.distill) if method in method_cfgs else cfg.distill,
            data=_data_of(cfg, method_cfgs.get(method), generated), orchestrator=orchestrator,
            source="offline" if offline else "served", stores=stores,
            use_teachers=served_by is not None or (method is not None and bool(cfg.teachers) and needs_teacher(terms)),
            teacher_snapshot=served_by, export_snapshot=method in exported,
            train=method is not None or dataset_kind != "embedding",  # an encoder's baseline is the untrained student
            init_seed=seed + INIT_SEED_STRIDE * generation(snapshots, method),
            generator=_generator_of(cfg, method, method_cfgs.get(method)),
            export_dir=(str(Path(cfg.run.output_dir).resolve() / cfg.run.name / "students" / phase)
                        if cfg.data.dataset == "stdlib_functions" else None),
            quantize_bits=method_cfgs[method].quantize if method in method_cfgs else None,
            ptq_bits=ptq_bits if method is None else (),
            speculative=method_cfgs[method].speculative if method in method_cfgs else None,
            **_teachers_of(cfg, method_cfgs.get(method))))
    return jobs


def _data_of(cfg: RunConfig, method_cfg: Any, generated: Optional[str]) -> Any:
    """The data a phase trains on: the run's, or for sequence-level KD the generated completions
    (all of them: they were written for the students' prompts)."""
    if method_cfg is None or method_cfg.train_data != "generated":
        return cfg.data
    if generated is None:
        raise ValueError("a train_data: generated method needs the generated completions' folder")
    return cfg.data.model_copy(update={"generated": generated, "student_train_samples": None})


def continual_phase(method: Optional[str], task_index: int, seed: int) -> str:
    """`kd-lwf-task2-seed0`, or `baseline-task2-seed0` for naive fine-tuning."""
    stem = "baseline" if method is None else f"kd-{method}" if method else "kd"
    return f"{stem}-task{task_index}-seed{seed}"


def continual_jobs(cfg: RunConfig, methods: dict[str, list[Term]], model: ResolvedModel, dataset: Any,
                   orchestrator: Any) -> list[StudentJob]:
    """A continual run: per seed and method (then the naive fine-tuning baseline), one phase per
    task in order. Task k trains on that task's samples only, starts from the student of task
    k - 1, and, when its terms need a teacher, is taught by that student's served snapshot;
    `lwf` terms match it on the classes of the earlier tasks."""
    continual = cfg.continual
    column = continual.column
    if column not in dataset.train.columns:
        raise ValueError(f"continual.column: the dataset {dataset.name!r} has no column {column!r}; "
                         f"its columns: {sorted(dataset.train.columns)}")
    values = dataset.train.columns[column]
    missing = sorted(set(continual.tasks) - set(values.tolist()))
    if missing:
        raise ValueError(f"continual.tasks: no training sample has {column} in {missing}; "
                         f"present: {sorted(set(values.tolist()))}")
    classes = {task: sorted(set(dataset.train.y[values == task].tolist())) for task in continual.tasks}
    order = tuple(continual.tasks)
    kinds = list(methods) + ([None] if cfg.run.baseline else [])
    jobs = []
    for seed in cfg.run.seeds:
        for method in kinds:
            terms = preset_terms("ce", 1.0) if method is None else methods[method]
            for k, task in enumerate(order):
                earlier = sorted(c for t in order[:k] for c in classes[t])
                previous = continual_phase(method, k - 1, seed) if k else None
                learns_from_previous = previous is not None and needs_teacher(terms)
                jobs.append(StudentJob(
                    phase=continual_phase(method, k, seed), seed=seed, terms=_with_old_classes(terms, earlier),
                    model=model, student=cfg.student, distill=cfg.distill, data=cfg.data, orchestrator=orchestrator,
                    use_teachers=learns_from_previous, teacher_snapshot=previous if learns_from_previous else None,
                    export_snapshot=k < len(order) - 1, init_from=previous, train_on=(column, (task,)),
                    replay=(column, order[:k], continual.replay_samples) if k and continual.replay_samples else None,
                    eval_by=(column, order), **_stored_replay(continual, method, terms, seed, k)))
    return jobs


def _stored_replay(continual: Any, method: Optional[str], terms: list[Term], seed: int, k: int) -> dict[str, Any]:
    """Replay with stored targets: each task but the last stores its student's targets on its
    memory; every later task learns its replayed samples from those."""
    if continual.replay_targets != "stored" or not needs_teacher(terms):
        return {}
    last = len(continual.tasks) - 1
    return {"store_memory": continual.replay_samples if k < last else None,
            "memory_from": tuple(continual_phase(method, j, seed) for j in range(k))}


def _with_old_classes(terms: list[Term], classes: list[int]) -> list[Term]:
    """`lwf` terms without their own `classes` get those of the earlier tasks."""
    return [Term(t.name, t.weight, {**t.params, "classes": classes})
            if t.name == "lwf" and "classes" not in t.params else t for t in terms]


def _teachers_of(cfg: RunConfig, method: Optional[Any]) -> dict[str, Any]:
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


def online_phase(peer: str, seed: int, mutual: bool) -> str:
    """`mutual-a-seed0` (trained with its peers), `alone-a-seed0` (the same peer on labels only)."""
    return f"{'mutual' if mutual else 'alone'}-{peer}-seed{seed}"


def online_jobs(cfg: RunConfig, terms: list[Term], models: dict[str, ResolvedModel],
                orchestrator: Any) -> dict[str, list[StudentJob]]:
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
                      orchestrator=orchestrator, trainer=peer.name)
        mutual = [StudentJob(
            phase=online_phase(peer.name, seed, True), seed=seed, init_seed=seed + INIT_SEED_STRIDE * index,
            terms=terms if teachers else preset_terms("ce", 1.0), use_teachers=bool(teachers),
            teachers=names, weighting=Weighting.from_config(cfg.distill.weighting, names),
            online=OnlineRole(peer=peer.name, round=round_, learns_from=tuple(teachers), publishes=peer.name in taught,
                              refresh_every=online.refresh_every, max_staleness=online.max_staleness,
                              timeout_s=online.start_timeout_s), **common)
            for round_, seed in enumerate(cfg.run.seeds)]
        alone = [StudentJob(phase=online_phase(peer.name, seed, False), seed=seed,
                            init_seed=seed + INIT_SEED_STRIDE * index, terms=preset_terms("ce", 1.0),
                            use_teachers=False, **common)
                 for seed in cfg.run.seeds] if cfg.run.baseline else []
        jobs[peer.name] = mutual + alone
    return jobs
