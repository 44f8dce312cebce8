"""Save and restore a student: DeepSpeed checkpoint + client state, through `ray.train.report`."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Optional

import ray.train
from ray.train import Checkpoint

logger = logging.getLogger(__name__)
TAG = "student"


@dataclass
class ClientState:
    """Where the loop stands: enough to continue exactly after the last applied batch."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0
    applied_batches: int = 0
    teacher_set_version: int = 0
    samples_seen: int = 0


def save_and_report(engine: Any, state: ClientState, metrics: dict[str, Any]) -> None:
    """Every rank saves its part of the DeepSpeed checkpoint and reports it (Ray merges them)."""
    with tempfile.TemporaryDirectory(prefix="distillery-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=TAG, client_state={"distillery": asdict(state)})
        ray.train.report({**metrics, "checkpoint_step": state.step}, checkpoint=Checkpoint.from_directory(tmp))


def restore(engine: Any) -> Optional[ClientState]:
    """Load the last reported checkpoint into `engine`; None when the phase starts fresh."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        load_path, client_state = engine.load_checkpoint(path, tag=TAG)
    if load_path is None:
        raise RuntimeError(f"checkpoint {checkpoint.path} holds no DeepSpeed checkpoint tagged {TAG!r}; "
                           "delete the run's output folder to start over")
    state = ClientState(**client_state["distillery"])
    logger.info("resumed from step %d (epoch %d, batch %d)", state.step, state.epoch, state.next_batch)
    return state
