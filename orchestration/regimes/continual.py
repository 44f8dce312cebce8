"""Lifelong (continual) distillation: a sequence of tasks; after each task the student's
snapshot becomes the teacher of the next, so old knowledge is kept while new is learned.

Config: `continual` (`ContinualConfig`, checked by `check_continual`: the task column, the tasks in order,
replay samples and whether replayed samples learn stored targets). Phases
(`continual_jobs`): per seed and method, then the naive fine-tuning baseline, one phase per
task. Worker hooks: `TaskRows` (the task's samples and the replayed memory), `InitFrom` (the
previous task's student), `TaskEvaluation` (accuracy per task), `MemoryReplay` and
`StoreMemory` (replay with stored targets); the teacher is the previous task's snapshot
(`orchestration.regimes.born_again`).

Results ("results" below): per method, the task-by-task accuracy matrix, the average accuracy
after the last task and backward transfer, mean and spread over seeds. A[k][j] is the
accuracy on task j's test samples after training on task k (of K), over all classes
(class-incremental: no task id at test time); the task-given matrix scores the same outputs
over task j's own classes only (task-incremental: the task id is given). Average accuracy is
mean_j A[K-1][j]; backward transfer (Lopez-Paz and Ranzato 2017) is
mean_{j<K-1} (A[K-1][j] - A[j][j]), negative when learning later tasks made the student
forget earlier ones.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import replace
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from cluster import Strict, method_kind

from orchestration.regimes.born_again import SnapshotExport, SnapshotTeacher
from orchestration.results import mean_std, student_label
from students import (MemoryTargets, Phase, PhaseHook, RunControl, Split, StudentJob, Term, accuracy, needs_teacher,
                      preset_terms, refuse_zero3, snapshot_methods)
from teachers import Batch, ResolvedModel, TeacherTargets


class ContinualConfig(Strict):
    """Lifelong continual distillation: the students learn a sequence of tasks, one phase per
    task, each phase starting from the student of the previous task. After each task that
    student's snapshot is served as a versioned teacher for the next task (learning without
    forgetting: use the `lwf` term). The baseline (`run.baseline`) is naive fine-tuning on the
    same sequence."""

    column: str = Field("task", description="the data column that names each sample's task")
    tasks: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2,
                             description="the task values of `column`, in the order they are learned")
    replay_samples: int = Field(0, ge=0, description="training samples of each earlier task kept in memory and "
                                                     "trained on again with every later task (every method and "
                                                     "the baseline alike); 0: none")
    replay_targets: Literal["snapshot", "stored"] = Field(
        "snapshot", description="the soft targets of replayed samples in KD methods: snapshot: the previous task's "
                                "served student labels them again; stored: the student that had just learned their "
                                "task labelled them once, into the run's offline store (dark experience replay)")

    @model_validator(mode="after")
    def _stored_needs_replay(self) -> "ContinualConfig":
        if self.replay_targets == "stored" and not self.replay_samples:
            raise ValueError("replay_targets: stored keeps soft targets of replayed samples; set replay_samples > 0")
        return self

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"tasks repeat a task: {value}")
        return value


def check_continual(cfg: Any) -> None:
    if cfg.continual is None:
        return
    where = "continual"
    if cfg.teachers or snapshot_methods(cfg):
        raise ValueError(f"{where}: each task's teacher is the student of the task before; drop teachers and "
                         f"distill.methods.*.teacher_snapshot")
    if cfg.distill.mode == "offline" or cfg.data.dataset != "digits":
        raise ValueError(f"{where}: task sequences run online on the digits dataset (its task column); "
                         f"got distill.mode {cfg.distill.mode}, data.dataset {cfg.data.dataset}")
    refuse_zero3(cfg, f"{where}: each task hands the student's weights to the next from rank 0")


def task_rows(train: Split, train_on: tuple[str, tuple[int, ...]],
              replay: Optional[tuple[str, tuple[int, ...], int]]) -> np.ndarray:
    """The rows of a continual phase: its task's samples and, with replay, the first samples of
    each earlier task (the same ones for every later task: the memory)."""
    column, values = train_on
    rows = np.flatnonzero(np.isin(train.columns[column], values))
    if replay:
        column, earlier, samples = replay
        memory = [np.flatnonzero(train.columns[column] == value)[:samples] for value in earlier]
        rows = np.sort(np.concatenate([rows, *memory]))
    return rows


class TaskRows(PhaseHook):
    """Args:
        train_on: (data column, values): train only on the samples whose column holds one of them.
        replay: (data column, earlier values, samples per value): the first samples of each
            earlier task, trained on again with this one.
    """

    def __init__(self, train_on: tuple[str, tuple[int, ...]], replay: Optional[tuple[str, tuple[int, ...], int]]):
        self.train_on, self.replay = train_on, replay

    def training_rows(self, train: Split) -> Split:
        # `row` keeps each sample's row of the training split (the key of stored memory targets)
        train = replace(train, columns={**train.columns, "row": np.arange(len(train.y))})
        return train.rows(task_rows(train, self.train_on, self.replay))


class InitFrom(PhaseHook):
    """The phase starts from the student the phase `previous` exported (the task before)."""

    def __init__(self, previous: str):
        self.previous = previous

    def prepare_model(self, model: torch.nn.Module, control: RunControl) -> None:
        model.load_state_dict(control.snapshot_weights(self.previous))


class TaskEvaluation(PhaseHook):
    """Per task: accuracy over all classes, and over the task's own classes (the task given)."""

    def __init__(self, column: str, values: tuple[int, ...]):
        self.column, self.values = column, values

    def evaluation_metrics(self, outputs: np.ndarray, test: Split) -> dict[str, float]:
        metrics = {}
        for value in self.values:
            rows = test.columns[self.column] == value
            own = np.full(outputs.shape[1], -np.inf)
            own[np.unique(test.y[rows])] = 0.0
            metrics[f"test_accuracy/{self.column}{value}"] = accuracy(outputs[rows], test.y[rows])
            metrics[f"task_given_accuracy/{self.column}{value}"] = accuracy(outputs[rows] + own, test.y[rows])
        return metrics


class MemoryReplay(PhaseHook):
    """Replayed samples learn the targets the earlier tasks' students stored on them
    (`students.replay`); `replay/stored_targets` counts them per step."""

    def __init__(self, memory_from: tuple[str, ...]):
        self.memory_from = memory_from
        self.memory: Optional[MemoryTargets] = None
        self.replayed = 0

    def start(self, phase: Phase, extra_state: dict[str, Any]) -> None:
        self.memory = MemoryTargets([phase.control.memory_store(p) for p in self.memory_from], phase.temperature)

    def patch_targets(self, targets: Optional[TeacherTargets], batch: Batch) -> Optional[TeacherTargets]:
        targets, self.replayed = self.memory.patch(targets, batch.columns["row"])
        return targets

    def after_step(self, phase: Phase, step: int, targets) -> dict[str, torch.Tensor]:
        return {"replay/stored_targets": torch.tensor(float(self.replayed))}


class StoreMemory(PhaseHook):
    """At the end of the phase the orchestrator stores this student's soft targets on the first
    `samples` training samples of its task (needs the phase's snapshot: after `SnapshotExport`)."""

    def __init__(self, column: str, task: int, samples: int):
        self.column, self.task, self.samples = column, task, samples

    def after_phase(self, phase: Phase) -> None:
        if phase.rank == 0:
            phase.control.store_memory_targets(phase.name, self.column, self.task, self.samples)


# --- phases -------------------------------------------------------------------------------------
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


# --- results --------------------------------------------------------------------------------------
PHASE = re.compile(r"^(?P<kind>.+)-task(?P<k>\d+)-seed(?P<seed>-?\d+)$")
METRIC = "average_accuracy"  # the headline of a continual run's rows (orchestration.results.METRICS)
CLASS_INCREMENTAL, TASK_GIVEN = "test_accuracy", "task_given_accuracy"


def accuracy_matrix(phases: dict[str, dict[str, Any]], kind: str, seed: int, column: str,
                    tasks: list[int], metric: str = CLASS_INCREMENTAL) -> np.ndarray:
    """[K, K] A[k][j] of one method and seed (NaN where a phase has not run)."""
    out = np.full((len(tasks), len(tasks)), np.nan)
    for k in range(len(tasks)):
        metrics = phases.get(f"{kind}-task{k}-seed{seed}")
        if metrics is not None:
            out[k] = [metrics[f"{metric}/{column}{task}"] for task in tasks]
    return out


def average_accuracy(matrix: np.ndarray) -> float:
    return float(matrix[-1].mean())


def backward_transfer(matrix: np.ndarray) -> float:
    return float(np.mean([matrix[-1, j] - matrix[j, j] for j in range(len(matrix) - 1)]))


def continual_rows(phases: dict[str, dict[str, Any]], column: str, tasks: list[int]) -> list[dict[str, Any]]:
    """One row per method (the baseline last) over the seeds whose every task finished."""
    runs: dict[str, set[int]] = {}
    for name in phases:
        match = PHASE.match(name)
        if match:
            runs.setdefault(match["kind"], set()).add(int(match["seed"]))
    rows = []
    for kind in sorted(runs, key=lambda k: k == "baseline"):
        matrices = {seed: accuracy_matrix(phases, kind, seed, column, tasks) for seed in sorted(runs[kind])}
        matrices = {seed: m for seed, m in matrices.items() if not np.isnan(m).any()}
        if not matrices:
            continue
        given = [accuracy_matrix(phases, kind, seed, column, tasks, TASK_GIVEN) for seed in matrices]
        averages = [average_accuracy(m) for m in matrices.values()]
        transfers = [backward_transfer(m) for m in matrices.values()]
        (mean, std), (bwt, bwt_std) = mean_std(averages), mean_std(transfers)
        (given_mean, given_std), (given_bwt, given_bwt_std) = (mean_std([average_accuracy(m) for m in given]),
                                                               mean_std([backward_transfer(m) for m in given]))
        last = f"{kind}-task{len(tasks) - 1}-seed{min(matrices)}"
        rows.append({"model": student_label(method_kind(kind), METRIC), "kind": method_kind(kind), "metric": METRIC, "score_mean": mean,
                     "score_std": std, "seeds": len(matrices), "parameters": phases[last]["parameters"],
                     "wall_s": statistics.fmean(sum(phases[f"{kind}-task{k}-seed{s}"]["train_s"]
                                                    for k in range(len(tasks))) for s in matrices),
                     "backward_transfer_mean": bwt, "backward_transfer_std": bwt_std,
                     "matrix": np.mean(list(matrices.values()), axis=0).tolist(),
                     "task_given_mean": given_mean, "task_given_std": given_std,
                     "task_given_backward_transfer_mean": given_bwt,
                     "task_given_backward_transfer_std": given_bwt_std,
                     "task_given_matrix": np.mean(given, axis=0).tolist(),
                     "note": f"backward transfer {bwt:+.4f} ± {bwt_std:.4f}; per seed "
                             + ", ".join(f"{a:.4f}" for a in averages)
                             + f"; task given: average {given_mean:.4f} ± {given_std:.4f}, "
                               f"backward transfer {given_bwt:+.4f} ± {given_bwt_std:.4f}"})
    return rows


def matrix_markdown(rows: list[dict[str, Any]], column: str, tasks: list[int]) -> str:
    """Each method's accuracy matrices (mean over seeds): rows after training task k, columns task j."""
    head = "| after training | " + " | ".join(f"{column} {t}" for t in tasks) + " |"
    out = []
    for row in rows:
        for key, what in (("matrix", "accuracy on each task"),
                          ("task_given_matrix", "accuracy on each task, the task given")):
            out += [f"### {row['model']}: {what} (mean over {row['seeds']} seeds)", "", head,
                    "|---" * (len(tasks) + 1) + "|"]
            out += [f"| {column} {tasks[k]} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
                    for k, values in enumerate(row[key])]
            out.append("")
    return "\n".join(out)
