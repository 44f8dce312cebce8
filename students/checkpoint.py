"""Save and restore a student: DeepSpeed checkpoint + client state, through `ray.train.report`.

One checkpoint holds every rank's DeepSpeed files (each rank reports its own folder; Ray
merges them) and `progress.json` (written by rank 0): the phase being trained and the final
metrics of the phases already finished, so a restarted run skips those.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import ray.train
from ray.train import Checkpoint

from ingest import BatchId

from students.checkpoint_integrity import (CheckpointError, first_complete, integrity_problem, refuse_unsafe_pickles,
                                           write_manifest)

logger = logging.getLogger(__name__)
TAG = "student"
PROGRESS_FILE = "progress.json"
LEDGER_FILE = "ledger-rank{rank}.json"  # the batch ids this rank applied, and those a stream delivered
PER_RANK = ("applied_ids", "delivered_ids")  # kept in each rank's ledger file, not in the shared client state


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
    applied_ids: dict[BatchId, int] = field(default_factory=dict)  # batch id -> times applied (the ledger)
    delivered_ids: dict[BatchId, None] = field(default_factory=dict)  # a stream's batches in order (its plan)

    def applied(self, batch_id: BatchId, batch_index: int, global_samples: int) -> None:
        """Record that the batch `batch_id`, at `batch_index` of the current epoch, was trained on."""
        self.step += 1
        self.next_batch = batch_index + 1
        self.applied_batches += 1
        self.samples_seen += global_samples
        self.applied_ids[batch_id] = self.applied_ids.get(batch_id, 0) + 1

    def delivered(self, batch_id: BatchId) -> None:
        """Record that a stream handed this worker the batch `batch_id` (once, whatever the resumes)."""
        self.delivered_ids.setdefault(batch_id, None)

    def ledger(self, planned: list[BatchId]) -> dict[str, int]:
        """Exactly-once accounting against the planned batch ids: the ledger is saved with the
        weights, so a batch trained before a failure and again after the resume counts once."""
        return {"batches_planned": len(planned),
                "batches_lost": sum(1 for b in planned if b not in self.applied_ids),
                "batches_applied_twice": sum(1 for n in self.applied_ids.values() if n > 1),
                "batches_unplanned": len(set(self.applied_ids) - set(planned))}


@dataclass
class RunProgress:
    """What the checkpoint says about the run: finished phases and the one in progress."""

    phase: str = ""
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)


def save_and_report(engine: Any, state: ClientState, progress: RunProgress, metrics: dict[str, Any],
                    extra_state: Optional[dict[str, Any]] = None) -> None:
    """Every rank saves its part of the DeepSpeed checkpoint and reports it. `extra_state`:
    what else the phase must resume with (the adversarial discriminator and its optimizer)."""
    context = ray.train.get_context()
    rank = context.get_world_rank()
    loop_state = {f.name: getattr(state, f.name) for f in fields(state) if f.name not in PER_RANK}  # every rank's
    with tempfile.TemporaryDirectory(prefix="distillery-ckpt-") as tmp:
        # DeepSpeed keeps rank 0's client state only; each rank's ledger goes in its own file
        engine.save_checkpoint(tmp, tag=TAG, client_state={"distillery": loop_state, "extra": extra_state or {}})
        (Path(tmp) / LEDGER_FILE.format(rank=rank)).write_text(
            json.dumps({"applied": {str(b): n for b, n in state.applied_ids.items()},
                        "delivered": [str(b) for b in state.delivered_ids]}))
        if rank == 0:
            (Path(tmp) / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))
        write_manifest(Path(tmp), rank, context.get_world_size())
        ray.train.report({**metrics, "phase": state.phase, "checkpoint_step": state.step},
                         checkpoint=Checkpoint.from_directory(tmp))


_chosen: dict[str, Checkpoint] = {}  # Ray's latest checkpoint path -> the one to resume from


def _candidates(latest: Checkpoint) -> list[Checkpoint]:
    """Ray's latest checkpoint, then (on a local or mounted filesystem) the older ones beside it."""
    folder = Path(latest.path)
    if not folder.parent.is_dir():
        return [latest]
    older = sorted((p for p in folder.parent.glob("checkpoint_*") if p.is_dir() and p.name < folder.name), reverse=True)
    return [latest] + [Checkpoint.from_directory(str(p)) for p in older]


def resume_checkpoint() -> Optional[Checkpoint]:
    """The newest complete checkpoint of this run (None on a fresh start). A checkpoint cut
    short or corrupted is skipped with a warning; when none is complete, `CheckpointError`
    says so; nothing is loaded from a checkpoint that fails its check."""
    latest = ray.train.get_checkpoint()
    if latest is None:
        return None
    if latest.path in _chosen:
        return _chosen[latest.path]
    chosen, problems = first_complete(_candidates(latest), _problem_of, lambda c: c.path)
    if chosen is None:
        raise CheckpointError("no complete checkpoint to resume from: " + "; ".join(problems) +
                              ". Delete the run's output folder (or the train/ folder in it) to start over")
    if problems:
        logger.warning("resuming from the older checkpoint %s: %s", chosen.path, "; ".join(problems))
    _chosen[latest.path] = chosen
    return chosen


def _problem_of(checkpoint: Checkpoint) -> Optional[str]:
    with checkpoint.as_directory() as path:
        return integrity_problem(Path(path))


def read_progress() -> Optional[RunProgress]:
    """The run progress stored in the checkpoint to resume from, or None on a fresh start."""
    checkpoint = resume_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        progress_path = Path(path) / PROGRESS_FILE
        if not progress_path.is_file():
            raise CheckpointError(f"checkpoint {checkpoint.path} has no {PROGRESS_FILE}: it was written by another "
                                  "program; delete the run's output folder to start over")
        return RunProgress(**json.loads(progress_path.read_text()))


def restore(engine: Any) -> tuple[ClientState, dict[str, Any]]:
    """Load the checkpoint to resume from into `engine` (after refusing pickles that could run
    code); return its client state, with this rank's ledger, and extra state."""
    checkpoint = resume_checkpoint()
    with checkpoint.as_directory() as path:
        ledger = Path(path) / LEDGER_FILE.format(rank=ray.train.get_context().get_world_rank())
        if not ledger.is_file():
            raise CheckpointError(f"checkpoint {checkpoint.path} has no {ledger.name}: it was written by another "
                                  f"number of workers; start the run over in a new output folder")
        refuse_unsafe_pickles(Path(path))
        load_path, client_state = engine.load_checkpoint(path, tag=TAG)
        if load_path is None:
            raise CheckpointError(f"checkpoint {checkpoint.path} holds no DeepSpeed checkpoint tagged {TAG!r}; "
                                  "delete the run's output folder to start over")
        ledger_state = json.loads(ledger.read_text())
        state = ClientState(**client_state["distillery"],
                            applied_ids={BatchId.parse(b): n for b, n in ledger_state["applied"].items()},
                            delivered_ids=dict.fromkeys(map(BatchId.parse, ledger_state["delivered"])))
    logger.info("phase %s resumed from step %d (epoch %d, batch %d) of %s", state.phase, state.step, state.epoch,
                state.next_batch, checkpoint.path)
    return state, client_state.get("extra", {})
