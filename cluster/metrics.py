"""Metric sinks: a JSONL log and TensorBoard event files under the run's output folder, and
MLflow when the config names a tracking server (`run.mlflow_tracking_uri`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a run's `metrics.jsonl` in the order they were written (none when the
    file is missing); a line cut short by a killed driver is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    with open(path) as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class MlflowSink:
    """One MLflow run per phase (`<run>/<phase>`, tagged `distillery.run`) in the experiment
    `experiment`; rank 0's numeric `group/name` fields are logged at their step. A `file:` store
    is MLflow's filesystem backend, which it keeps for local use behind an opt-in."""

    def __init__(self, tracking_uri: str, experiment: str, run: str):
        import os

        if tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.client, self.run = MlflowClient(tracking_uri=tracking_uri), run
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self._runs: dict[str, str] = {}

    def log(self, phase: str, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if phase not in self._runs:
            created = self.client.create_run(self.experiment_id, run_name=f"{self.run}/{phase}",
                                             tags={"distillery.run": self.run, "distillery.phase": phase})
            self._runs[phase] = created.info.run_id
        now = int(time.time() * 1000)
        self.client.log_batch(self._runs[phase], metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def close(self) -> None:
        for run_id in self._runs.values():
            self.client.set_terminated(run_id)


class MetricsSink:
    """Appends every record to `metrics.jsonl`; numeric fields also go to TensorBoard.

    One TensorBoard writer per phase (`tensorboard/<phase>`), so runs of the KD student and
    the baseline overlay in one dashboard. Thread-safe: the orchestrator takes records from
    several trainers at once.
    """

    def __init__(self, run_dir: str | Path, mlflow: Optional[MlflowSink] = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / METRICS_FILE, "a", buffering=1)
        self._writers: dict[str, Any] = {}
        self._mlflow = mlflow
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
        phase = str(record.get("phase", "run"))
        scalars = {k: v for k, v in record.items()
                   if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
        writer = self._writer(phase)
        for key, value in scalars.items():
            writer.add_scalar(key, value, step)
        if self._mlflow is not None and scalars:
            self._mlflow.log(phase, step, scalars)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        if self._mlflow is not None:
            self._mlflow.close()
        self._jsonl.close()
