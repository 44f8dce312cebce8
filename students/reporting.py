"""What a worker tells the run while it trains: rolling metric records, and whether to stop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from students.checkpoint import ClientState
from students.run_control import RunControl
from teachers import SoftTargetSource


class StopCheck:
    """Whether the run was asked to stop (`distillery stop`), the same answer on every rank: every
    `every` steps each rank reads the run control's non-blocking answer and the ranks
    all-reduce what they saw, so that all of them leave the loop after the same step."""

    def __init__(self, control: RunControl, every: int, device: torch.device):
        self.control, self.every, self.device = control, every, device

    def __call__(self, step: int) -> bool:
        if step % self.every:
            return False
        flag = torch.tensor([float(self.control.stop_requested_nowait())], device=self.device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class OnWindowBoundary:
    """Holds what falls due (a checkpoint, a stop) until the step that closes a gradient-
    accumulation window, where DeepSpeed has applied every micro-batch's gradient: a checkpoint
    taken inside a window would drop the gradients summed so far (DeepSpeed does not save
    them), and a resumed run would never apply those batches, though its ledger counts them."""

    def __init__(self, accumulation_steps: int):
        self.accumulation_steps = accumulation_steps
        self.pending = False

    def __call__(self, step: int, due: bool) -> bool:
        """Whether to act after `step`: `due` now or earlier, and `step` closes a window."""
        self.pending = self.pending or due
        if self.pending and step % self.accumulation_steps == 0:
            self.pending = False
            return True
        return False


class ProgressReporter:
    """Rolling throughput, loss and teacher-weight averages, reported as metric records
    (`loss/<term>`; `teacher/<name>/effective_weight`: the teacher's mean per-sample weight in
    the merged target over the steps it answered; keys that already name a group, like
    `replay/stored_targets`, as they are)."""

    def __init__(self, control: RunControl, phase: str, trainer: Optional[str], unit: str, rank: int,
                 world_size: int):
        self.control, self.phase, self.trainer, self.unit = control, phase, trainer, unit
        self.rank, self.world_size = rank, world_size
        self.window_start, self.window_samples = time.perf_counter(), 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.count = 0
        self.last_checkpoint: Optional[int] = None
        self.steps_total: Optional[int] = None  # the phase's planned steps; unknown for a stream
        self.peak_private_mb = 0.0  # the largest private memory a progress record saw

    def add(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        for key, value in terms.items():
            weight_of = key.removeprefix("teacher_weight/")
            key = (f"teacher/{weight_of}/effective_weight" if weight_of != key else key if "/" in key
                   else f"loss/{key}")
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1
        self.window_samples += batch_size * self.world_size

    def flush(self, state: ClientState, source: Optional[SoftTargetSource], extra: Optional[dict[str, Any]] = None) -> None:
        now = time.perf_counter()
        record: dict[str, Any] = {"phase": self.phase, "rank": self.rank, "step": state.step, "epoch": state.epoch}
        if self.trainer:
            record["trainer"] = self.trainer
        if self.count:
            elapsed = max(now - self.window_start, 1e-9)
            record[f"throughput/{self.unit}_per_s"] = self.window_samples / elapsed
            if self.steps_total:
                record["progress/steps_total"] = self.steps_total
                record["progress/eta_s"] = max(self.steps_total - state.step, 0) * elapsed / self.count
            record.update({k: v / self.counts[k] for k, v in self.sums.items()})
        if source is not None:
            ts = source.teacher_set
            record["teacher_set/version"] = ts.version
            record["teachers"] = sorted(ts.teachers)
            record.update({f"teacher/{n}/weight": w for n, w in ts.weights().items()})
            record.update(source.metrics())
        private = private_mb()
        if private is not None:
            record["memory/private_mb"] = private
            self.peak_private_mb = max(self.peak_private_mb, private)
        if self.last_checkpoint is not None:
            record["checkpoint/last_step"] = self.last_checkpoint
        record.update(extra or {})
        self.control.report(record)
        self.window_start, self.window_samples, self.sums, self.counts, self.count = now, 0, {}, {}, 0


def private_mb() -> Optional[float]:
    """This process's own memory: its private pages (Linux's Private_Clean + Private_Dirty)
    outside shared-memory files. Unlike the resident set, it leaves out the pages of Ray's
    object store (a file under /dev/shm that the worker maps to read blocks), which count as
    private while no other process has touched them but belong to the store and are bounded by
    its capacity. None where /proc/self/smaps is missing."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    total, shared_file = 0, False
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(":"):  # a mapping's header line: range, perms, offset, dev, inode, path
            shared_file = len(fields) > 5 and fields[5].startswith("/dev/shm/")
        elif not shared_file and fields[0] in ("Private_Clean:", "Private_Dirty:"):
            total += int(fields[1])
    return total / 1024
