"""Lifelong (continual) distillation: a sequence of tasks; after each task the student's
snapshot becomes the teacher of the next, so old knowledge is kept while new is learned.

- `config.py`: the `continual` section (`ContinualConfig`: the task column, the tasks in order,
  replay samples, and whether replayed samples learn stored targets) and `check_continual`;
- `phases.py`: per seed and method, then the naive fine-tuning baseline, one phase per task;
  the run regime `REGIME`;
- `hooks.py`: `TaskRows` (the task's samples and the replayed memory), `InitFrom` (the previous
  task's student), `TaskEvaluation` (accuracy per task), `MemoryReplay` and `StoreMemory`
  (replay with stored targets, `replay.py`); the teacher is the previous task's snapshot
  (`orchestration.regimes.born_again`), kept by the orchestrator (`orchestration.snapshots`);
- `results.py`: the task-by-task accuracy matrix, average accuracy, backward transfer.
"""

from orchestration.regimes.continual.config import ContinualConfig, check_continual
from orchestration.regimes.continual.hooks import (InitFrom, MemoryReplay, StoreMemory, TaskEvaluation, TaskRows,
                                                   task_rows)
from orchestration.regimes.continual.phases import REGIME, continual_jobs, continual_phase
from orchestration.regimes.continual.replay import MemoryTargets
from orchestration.regimes.continual.results import (accuracy_matrix, average_accuracy, backward_transfer,
                                                     continual_rows, matrix_markdown)

__all__ = ["REGIME", "ContinualConfig", "InitFrom", "MemoryReplay", "MemoryTargets", "StoreMemory", "TaskEvaluation",
           "TaskRows", "accuracy_matrix", "average_accuracy", "backward_transfer", "check_continual",
           "continual_jobs", "continual_phase", "continual_rows", "matrix_markdown", "task_rows"]
