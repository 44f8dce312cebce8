"""Driver-side progress: poll the orchestrator while a phase trains and show it with rich."""

from __future__ import annotations

import threading
from contextlib import nullcontext
import time
from typing import Any, Callable

import ray
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


ONE_LINE = ("teacher", "weight", "share", "latency (ms)", "wait (ms)", "in flight")  # versions give way
PROGRESS_BLOCKS = 32  # at most this many input blocks for a Ray Data job: its bar's granularity


def progress_blocks(table: Any, batch_size: int, max_blocks: int = PROGRESS_BLOCKS) -> list[Any]:
    """`table` (pyarrow) cut into whole batches of up to `max_blocks` blocks, so the Ray Data
    progress bar of a long job (`precompute`, `generate`) moves block by block instead of
    jumping from 0 to done on a single block. Row order does not matter to the readers."""
    batches = max(1, -(-table.num_rows // batch_size))
    per_block = -(-batches // min(batches, max_blocks)) * batch_size
    return [table.slice(start, per_block) for start in range(0, max(table.num_rows, 1), per_block)]


def progress_line(status: dict[str, Any]) -> str:
    """One line per training phase (several when peer trainers run at once): step, loss,
    throughput, teacher-set version and teachers in use."""
    records = _rank0_records(status)
    if not records:
        return "students: starting workers..."
    return "\n".join(_phase_line(rec) for rec in records)


def phase_changes(status: dict[str, Any], announced: dict[str, bool]) -> list[str]:
    """A line for each phase that started or finished since `announced` (updated) was last seen.
    The finished phases come from the orchestrator's list (`finished`: phase -> its last step,
    in the order they finished), so a phase whose last record was replaced by the next phase's
    before this look is announced too."""
    running = _rank0_records(status)
    finished = {**{rec["phase"]: rec["step"] for rec in running if rec.get("phase_done")}, **status.get("finished", {})}
    lines = []
    for phase in [*finished, *(rec["phase"] for rec in running if rec["phase"] not in finished)]:
        if phase not in announced:
            lines.append(f"{phase}: started")
        if phase in finished and not announced.get(phase):
            lines.append(f"{phase}: finished at step {finished[phase]}")
        announced[phase] = announced.get(phase, False) or phase in finished
    return lines


def _rank0_records(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Rank 0's latest record of each trainer (`rank0`, or `<peer>/rank0` in online co-training)."""
    return [rec for key, rec in status["progress"].items() if key == "rank0" or key.endswith("/rank0")]


def _phase_line(rec: dict[str, Any]) -> str:
    total = f"/{rec['progress/steps_total']}" if "progress/steps_total" in rec else ""
    parts = [f"{rec['phase']}: epoch {rec['epoch']} step {rec['step']}{total}"]
    if "loss/total" in rec:
        parts.append(f"loss {rec['loss/total']:.4f}")
    for key, short in (("test_accuracy", "test_acc"), ("test_cosine", "test_cos"), ("test_perplexity", "test_ppl")):
        value = rec.get(f"eval/{key}", rec.get(f"final/{key}"))
        if value is not None:
            parts.append(f"{short} {value:.3f}")
    for unit in ("samples", "tokens"):
        if f"throughput/{unit}_per_s" in rec:
            parts.append(f"{rec[f'throughput/{unit}_per_s']:.0f} {unit}/s")
    if "progress/eta_s" in rec:
        parts.append(f"{_duration(rec['progress/eta_s'])} left")
    if "online/staleness_steps" in rec:
        parts.append(f"endpoint {rec['online/staleness_steps']} steps behind")
    if "teacher_set/version" in rec:
        teachers = ", ".join(f"{n}(w={rec.get(f'teacher/{n}/weight', 0):.2g}{_share(rec, n)})" for n in rec["teachers"])
        parts.append(f"teacher set v{rec['teacher_set/version']}: {teachers or 'none'}")
    else:
        parts.append("no teachers")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h07m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _share(record: dict[str, Any], teacher: str) -> str:
    """", 38%": the teacher's share of the merged targets in the record's steps, when known."""
    share = record.get(f"teacher/{teacher}/effective_weight")
    return "" if share is None else f", {share:.0%}"


def status_table(status: dict[str, Any]) -> Table:
    """The run's teachers: static weight, share of the merged targets (rank 0's last record),
    output space, version and where each is served."""
    table = Table(title=f"run {status['run']} (teacher set v{status['teacher_set_version']})")
    table.add_column("teacher")
    table.add_column("weight", justify="right")
    table.add_column("share", justify="right")
    table.add_column("output space")
    table.add_column("model version")
    table.add_column("served by")
    table.add_column("replicas", justify="right")
    latest = next(iter(_rank0_records(status)), {})
    for name, info in status["teachers"].items():
        replicas = info.get("replicas")
        table.add_row(name, f"{info['weight']:.3g}", _share(latest, name).lstrip(", ") or "-", info["output_space"],
                      info["model_version"], info.get("endpoint", ""), "-" if replicas is None else str(replicas))
    return table


def dashboard(status: dict[str, Any]) -> Group:
    """`distillery status --watch`: every trainer's step, throughput, losses and last
    checkpoint; the teachers with their weights, share, wait and requests in flight; the
    fault counters and the latest events."""
    students = Table(title=f"run {status['run']}: students", expand=True)
    for column in ("phase", "epoch", "step", "throughput", "losses", "eval", "last checkpoint"):
        students.add_column(column)
    records = _rank0_records(status)
    for rec in records:
        unit = next((u for u in ("samples", "tokens") if f"throughput/{u}_per_s" in rec), None)
        losses = " ".join(f"{k.removeprefix('loss/')} {v:.4f}" for k, v in sorted(rec.items()) if k.startswith("loss/"))
        evals = " ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in sorted(rec.items())
                         if k.startswith("eval/test_") and k.count("/") == 1)
        students.add_row(rec.get("phase", "?"), str(rec.get("epoch", "")), str(rec.get("step", "")),
                         f"{rec[f'throughput/{unit}_per_s']:.0f} {unit}/s" if unit else "-", losses or "-", evals or "-",
                         str(rec.get("checkpoint/last_step", "-")))
    if not records:
        students.add_row("starting workers...", "", "", "", "", "", "")
    latest = records[0] if records else {}
    teachers = Table(title=f"teachers (teacher set v{status['teacher_set_version']})", expand=True)
    for column in ("teacher", "weight", "share", "latency (ms)", "wait (ms)", "in flight", "model version",
                   "served by"):
        teachers.add_column(column, no_wrap=column in ONE_LINE)
    for name, info in status["teachers"].items():
        latency, wait = latest.get(f"teacher/{name}/latency_ms"), latest.get(f"teacher/{name}/wait_ms")
        flight = latest.get(f"teacher/{name}/in_flight")
        teachers.add_row(name, f"{info['weight']:.3g}", _share(latest, name).lstrip(", ") or "-",
                         "-" if latency is None else f"{latency:.1f}", "-" if wait is None else f"{wait:.1f}",
                         "-" if flight is None else str(flight),
                         info["model_version"], info.get("endpoint", ""))
    faults = " | ".join(f"{k.removeprefix('faults/').replace('_', ' ')} {v:.4g}" for k, v in sorted(latest.items())
                        if k.startswith("faults/"))
    events = [f"{e['event']}: " + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("event", "time"))
              for e in status.get("events", [])[-5:]]
    return Group(students, teachers, Text(f"faults (rank 0): {faults or 'none'}"),
                 Text("latest events:\n  " + "\n  ".join(events) if events else "latest events: none"))


def follow(orchestrator: Any, work: Callable[[], Any], console: Console, interval_s: float = 1.0,
           plain_every_s: float = 5.0) -> Any:
    """Run `work()` in a thread and show the orchestrator's progress until it returns.

    On a terminal the line updates in place; in a log (`ray job submit`) it is printed at
    most every `plain_every_s` seconds.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    last, printed_at = "", 0.0
    announced: dict[str, bool] = {}  # phase -> whether its end was announced
    # stdout and stderr are not redirected into the display: with a quiet console they go to the run's log
    live_view = Live(console=console, refresh_per_second=4, transient=True, redirect_stdout=False, redirect_stderr=False)
    with live_view if console.is_terminal else nullcontext() as live:
        while thread.is_alive():
            thread.join(interval_s)
            try:
                status = ray.get(orchestrator.status.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - progress is best effort; training goes on
                continue
            for message in phase_changes(status, announced):
                console.print(Text(message))
            line = progress_line(status)
            if console.is_terminal:
                live.update(Text(line))
            elif line != last and time.monotonic() - printed_at >= plain_every_s:
                console.print(Text(line))
                printed_at = time.monotonic()
            last = line
    try:  # what finished after the last look
        for message in phase_changes(ray.get(orchestrator.status.remote(), timeout=10), announced):
            console.print(Text(message))
    except Exception:  # noqa: BLE001 - progress is best effort
        pass
    if last:
        console.print(Text(last))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class StageBar:
    """A progress bar over the named stages of a long command (`export`): call the instance
    with each stage's name as it starts; the bar completes when the block ends."""

    def __init__(self, console: Console, title: str, stages: tuple[str, ...]):
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._task = self._progress.add_task(title, total=len(stages))
        self._title, self._stages = title, stages

    def __enter__(self) -> "StageBar":
        self._progress.start()
        return self

    def __call__(self, stage: str) -> None:
        self._progress.update(self._task, completed=self._stages.index(stage), description=f"{self._title}: {stage}")
        if not self._progress.console.is_terminal:  # in a log, one line per stage
            self._progress.console.print(f"{self._title}: {stage}")

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._progress.update(self._task, completed=len(self._stages), description=f"{self._title}: done")
        self._progress.stop()
