"""What a continual task adds to a worker's loop."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np
import torch

from ingest import Batch, Split
from orchestration.regimes.continual.replay import MemoryTargets
from students import Phase, PhaseHook, RunControl, accuracy
from teachers import TeacherTargets


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
    (`replay.py`); `replay/stored_targets` counts them per step."""

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
