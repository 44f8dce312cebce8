"""Save and restore a student: DeepSpeed checkpoint + client state, through `ray.train.report`.

One checkpoint holds every rank's DeepSpeed files (each rank reports its own folder; Ray
merges them) and `progress.json` (written by rank 0): the phase being trained and the final
metrics of the phases already finished, so a restarted run skips those.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import ray.train
from ray.train import Checkpoint

logger = logging.getLogger(__name__)
TAG = "student"
PROGRESS_FILE = "progress.json"


@dataclass
class ClientState:
    """Where the loop stands in one phase: enough to continue after the last applied batch."""

    phase: str = ""
    step: int = 0
    epoch: int = 0
    next_batch: int = 0
    applied_batches: int = 0
    teacher_set_version: int = 0
    samples_seen: int = 0

    def applied(self, batch_index: int, global_samples: int) -> None:
        """Record that the batch at `batch_index` of the current epoch was trained on."""
        self.step += 1
        self.next_batch = batch_index + 1
        self.applied_batches += 1
        self.samples_seen += global_samples


@dataclass
class RunProgress:
    """What the checkpoint says about the run: finished phases and the one in progress."""

    phase: str = ""
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)


def save_and_report(engine: Any, state: ClientState, progress: RunProgress, metrics: dict[str, Any],
                    extra_state: Optional[dict[str, Any]] = None) -> None:
    """Every rank saves its part of the DeepSpeed checkpoint and reports it. `extra_state`:
    what else the phase must resume with (the adversarial discriminator and its optimizer)."""
    with tempfile.TemporaryDirectory(prefix="distillery-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=TAG, client_state={"distillery": asdict(state), "extra": extra_state or {}})
        if ray.train.get_context().get_world_rank() == 0:
            (Path(tmp) / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))
        ray.train.report({**metrics, "phase": state.phase, "checkpoint_step": state.step},
                         checkpoint=Checkpoint.from_directory(tmp))


def read_progress() -> Optional[RunProgress]:
    """The run progress stored in the last reported checkpoint, or None on a fresh start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        progress_path = Path(path) / PROGRESS_FILE
        if not progress_path.is_file():
            raise RuntimeError(f"checkpoint {checkpoint.path} has no {PROGRESS_FILE}: it was cut short or "
                               "written by another program; delete the run's output folder to start over")
        return RunProgress(**json.loads(progress_path.read_text()))


def restore(engine: Any) -> tuple[ClientState, dict[str, Any]]:
    """Load the last reported checkpoint into `engine`; return its client state and extra state."""
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() as path:
        load_path, client_state = engine.load_checkpoint(path, tag=TAG)
    if load_path is None:
        raise RuntimeError(f"checkpoint {checkpoint.path} holds no DeepSpeed checkpoint tagged {TAG!r}; "
                           "delete the run's output folder to start over")
    state = ClientState(**client_state["distillery"])
    logger.info("phase %s resumed from step %d (epoch %d, batch %d)", state.phase, state.step, state.epoch,
                state.next_batch)
    return state, client_state.get("extra", {})
