"""How a regime plugs into a worker's training loop.

A phase's `StudentJob` carries the hooks of the regimes it belongs to (built on the driver by
`orchestration.regimes`); the loop in `students.train_loop` calls them at fixed points, in
the order the job lists them. Every method has a no-op default, so a hook overrides only
the points it needs:

    training_rows -> prepare_model -> [DeepSpeed] -> before_phase -> start (source built)
    per batch: next_batch -> [targets] -> patch_targets -> [forward, loss] -> extra_loss
               -> [backward, step] -> after_optimizer_step -> after_step -> log_metrics
    checkpoint: state_dict (restored through `start`'s `extra_state`)
    evaluation: evaluation_metrics; end: after_training -> final_metrics -> after_phase
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ingest import Batch, Split
from students.run_control import RunControl
from teachers import SoftTargetSource, TeacherTargets


@dataclass
class Phase:
    """What a hook may use of the phase being trained.

    Args:
        name: the phase name (`kd-seed0`).
        seed: the phase's seed.
        control: the run control (`students.run_control.RunControl`).
        rank, world_size: this worker's place in the worker group.
        engine: the DeepSpeed engine (`engine.module.model` is the student).
        train: the training rows of this phase (after `training_rows`).
        temperature: the phase's KD temperature.
        source: the soft-target source, None for a phase without teachers.
        step: the step the phase starts (or resumes) at.
    """

    name: str
    seed: int
    control: RunControl
    rank: int
    world_size: int
    engine: Any
    train: Split
    temperature: float
    source: Optional[SoftTargetSource] = None
    step: int = 0

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module.model


class PhaseHook:
    """A regime's part in one phase of a worker's loop (no-op defaults)."""

    def training_rows(self, train: Split) -> Split:
        """The rows this phase trains on (a continual task's)."""
        return train

    def teachers(self) -> Optional[set[str]]:
        """The teachers of the set this phase reads (None: the job's)."""
        return None

    def prepare_model(self, model: torch.nn.Module, control: RunControl) -> None:
        """Change the student before DeepSpeed wraps it (initial weights, fake quantization)."""

    def before_phase(self, phase: Phase) -> None:
        """Before the soft-target source is built (serve a snapshot, meet co-training peers)."""

    def start(self, phase: Phase, extra_state: dict[str, Any]) -> None:
        """Once the source exists; `extra_state` is what `state_dict` saved when resuming."""

    def plans_ahead(self) -> bool:
        """False when the phase makes its batches one by one, so the source cannot plan them."""
        return True

    def next_batch(self, batch: Batch, step: int) -> Batch:
        """The batch to train on in place of the planned one (it keeps the planned batch's id in the ledger)."""
        return batch

    def patch_targets(self, targets: Optional[TeacherTargets], batch: Batch) -> Optional[TeacherTargets]:
        return targets

    def extra_loss(self, engine: Any) -> Optional[dict[str, torch.Tensor]]:
        """`{"terms": {...}, "weighted": tensor}` added to the loss, computed under the phase's
        autocast after the batch's own terms."""
        return None

    def after_optimizer_step(self, engine: Any) -> dict[str, torch.Tensor]:
        """After the student's optimizer step; returns terms to log."""
        return {}

    def after_step(self, phase: Phase, step: int, targets: Optional[TeacherTargets]) -> dict[str, torch.Tensor]:
        """After the batch is recorded as applied (`step` counts it); returns terms to log."""
        return {}

    def log_metrics(self) -> dict[str, Any]:
        """Keys added to each metric record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint keeps of this hook (a key of its own)."""
        return {}

    def evaluation_metrics(self, outputs: np.ndarray, test: Split) -> dict[str, float]:
        """Extra test metrics from the student's outputs on the test split (classifiers)."""
        return {}

    def after_training(self, phase: Phase) -> None:
        """After the last step, once the source is closed."""

    def final_metrics(self, phase: Phase, evaluate) -> dict[str, Any]:
        """Extra final metrics; `evaluate(model)` scores another module like the student."""
        return {}

    def after_phase(self, phase: Phase) -> None:
        """After the final metrics, before the export (hand the student over)."""

    def export_options(self) -> dict[str, Any]:
        """Keyword arguments of `students.phase_export.export_student`."""
        return {}

    def on_done_before(self, control: RunControl, rank: int) -> None:
        """The phase finished before a restart (co-training peers announce their rounds)."""


def each(hooks, method: str, *args: Any) -> list[Any]:
    """Call `method` on every hook, in order; their answers."""
    return [getattr(hook, method)(*args) for hook in hooks]


def merged(hooks, method: str, *args: Any) -> dict[str, Any]:
    """Call `method` on every hook, in order, and merge the dicts they answer (later hooks win)."""
    return {key: value for part in each(hooks, method, *args) for key, value in part.items()}
