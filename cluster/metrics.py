"""Metric sinks: a JSONL log and TensorBoard event files under the run's output folder."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class MetricsSink:
    """Appends every record to `metrics.jsonl`; numeric fields also go to TensorBoard.

    One TensorBoard writer per phase (`tensorboard/<phase>`), so runs of the KD student and
    the baseline overlay in one dashboard. Thread-safe: the orchestrator takes records from
    several trainers at once.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self._writers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _writer(self, phase: str):
        if phase not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[phase] = SummaryWriter(str(self.run_dir / "tensorboard" / phase))
        return self._writers[phase]

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._write({"time": time.time(), **record})

    def _write(self, record: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(record, default=str) + "\n")
        step = record.get("step")
        if step is None or record.get("rank", 0) != 0:
            return
        writer = self._writer(str(record.get("phase", "run")))
        for key, value in record.items():
            if "/" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._jsonl.close()
