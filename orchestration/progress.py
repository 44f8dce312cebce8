"""Driver-side progress: poll the orchestrator while a phase trains and show it with rich."""

from __future__ import annotations

import threading
from typing import Any, Callable

import ray
from rich.console import Console
from rich.live import Live
from rich.table import Table


def progress_line(status: dict[str, Any]) -> str:
    """One line per phase: step, loss, throughput, teacher-set version and teachers in use."""
    rank0 = [rec for key, rec in status["progress"].items() if key.endswith("/rank0") and rec["phase"] == status["phase"]]
    if not rank0:
        return f"[{status['phase']}] starting..."
    rec = rank0[-1]
    loss = rec.get("loss/total", float("nan"))
    acc = rec.get("eval/test_accuracy")
    teachers = ", ".join(f"{n}({rec.get(f'teacher/{n}/weight', 0):.2g})" for n in rec.get("teachers", [])) or "none"
    acc_text = f" test_acc {acc:.3f}" if acc is not None else ""
    return (f"[{rec['phase']}] epoch {rec['epoch']} step {rec['step']} loss {loss:.4f}{acc_text} "
            f"{rec.get('throughput/samples_per_s', 0):.0f} samples/s teacher set "
            f"v{rec.get('teacher_set/version', '-')} teachers: {teachers}")


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"run {status['run']} (teacher set v{status['teacher_set_version']})")
    table.add_column("teacher")
    table.add_column("weight", justify="right")
    table.add_column("output space")
    table.add_column("model version")
    for name, info in status["teachers"].items():
        table.add_row(name, f"{info['weight']:.3g}", info["output_space"], info["model_version"])
    return table


def follow(orchestrator: Any, work: Callable[[], Any], console: Console, interval_s: float = 1.0) -> Any:
    """Run `work()` in a thread and show the orchestrator's progress until it returns."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    last = ""
    with Live(console=console, refresh_per_second=4, transient=True) if console.is_terminal else _NoLive() as live:
        while thread.is_alive():
            thread.join(interval_s)
            try:
                line = progress_line(ray.get(orchestrator.status.remote(), timeout=10))
            except Exception:  # noqa: BLE001 - progress is best effort; training goes on
                continue
            if console.is_terminal:
                live.update(line)
            elif line != last:
                console.print(line, highlight=False)
            last = line
    if last:
        console.print(last, highlight=False)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
