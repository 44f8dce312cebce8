"""The phases of a continual run and its run regime."""

from __future__ import annotations

from typing import Any, Optional

from orchestration.regimes.born_again import SnapshotExport, SnapshotTeacher
from orchestration.regimes.continual.hooks import InitFrom, MemoryReplay, StoreMemory, TaskEvaluation, TaskRows
from orchestration.regimes.continual.results import continual_rows, matrix_markdown
from students import PhaseHook, RunControl, StudentJob, Term, needs_teacher, preset_terms
from teachers import ResolvedModel


def continual_phase(method: Optional[str], task_index: int, seed: int) -> str:
    """`kd-lwf-task2-seed0`, or `baseline-task2-seed0` for naive fine-tuning."""
    stem = "baseline" if method is None else f"kd-{method}" if method else "kd"
    return f"{stem}-task{task_index}-seed{seed}"


def continual_jobs(cfg: Any, methods: dict[str, list[Term]], model: ResolvedModel, dataset: Any,
                   control: Optional[RunControl]) -> list[StudentJob]:
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
                    model=model, student=cfg.student, distill=cfg.distill, data=cfg.data, control=control,
                    use_teachers=learns_from_previous,
                    hooks=_task_hooks(continual, column, order, k, previous if learns_from_previous else None,
                                      previous, _stored_replay(continual, method, terms, seed, k))))
    return jobs


def _task_hooks(continual: Any, column: str, order: tuple[int, ...], k: int, teacher: Optional[str],
                previous: Optional[str], stored: dict[str, Any]) -> tuple[PhaseHook, ...]:
    """Task k's hooks, in hand-over order: export this student, store its memory targets (they
    read the export), then retire the snapshot it learned from."""
    replay = (column, order[:k], continual.replay_samples) if k and continual.replay_samples else None
    hooks: list[PhaseHook] = [TaskRows((column, (order[k],)), replay)]
    if previous is not None:
        hooks.append(InitFrom(previous))
    hooks.append(TaskEvaluation(column, order))
    if stored.get("memory_from"):
        hooks.append(MemoryReplay(stored["memory_from"]))
    if k < len(order) - 1:
        hooks.append(SnapshotExport())
        if stored.get("store_memory"):
            hooks.append(StoreMemory(column, order[k], stored["store_memory"]))
    if teacher is not None:
        hooks.append(SnapshotTeacher(teacher))
    return tuple(hooks)


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


# --- the run regime -------------------------------------------------------------------------------
class ContinualRegime:
    name = "continual"

    def active(self, cfg: Any) -> bool:
        return cfg.continual is not None

    def plan(self, ctx: Any) -> dict[str, list[StudentJob]]:
        return {"": continual_jobs(ctx.cfg, ctx.methods, ctx.student_model, ctx.dataset, ctx.control)}

    def results(self, cfg: Any, phases: dict[str, dict[str, Any]],
                teachers: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        rows = continual_rows(phases, cfg.continual.column, cfg.continual.tasks)
        return rows, matrix_markdown(rows, cfg.continual.column, cfg.continual.tasks)


REGIME = ContinualRegime()
