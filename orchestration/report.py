"""`report.md` of a run, with PNG plots drawn from its `metrics.jsonl` and results.

Plots (rank 0's records): the loss terms of every phase over steps; the evaluation metric
over steps for every student phase, with the teachers' scores as horizontal lines; each
teacher's weight (static and effective) over steps; each teacher's latency (the round trip of its requests, and the
worker's wait for its soft targets). Events (teachers added, removed or lost, resumes, stops) are listed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from cluster import read_metrics

PLOTS = ("loss", "eval", "teacher_weights", "teacher_latency")


def _records(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rank 0's step records and the run's events, in the order they were written."""
    steps, events = [], []
    for record in read_metrics(run_dir):
        if "event" in record:
            events.append(record)
        elif record.get("rank", 0) == 0 and "step" in record and "phase" in record:
            steps.append(record)
    return steps, events


def _series(steps: list[dict[str, Any]], key_of) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{phase: {label: [(step, value)]}} for the keys `key_of(key)` maps to a label (None: skip)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for record in steps:
        for key, value in record.items():
            label = key_of(key)
            if label is not None and isinstance(value, (int, float)):
                out[record["phase"]][label].append((record["step"], float(value)))
    return out


def _plot(path: Path, title: str, ylabel: str, lines: dict[str, list[tuple[int, float]]],
          hlines: Optional[dict[str, float]] = None, logy: bool = False) -> bool:
    """One PNG; False (nothing written) when there is nothing to draw."""
    if not lines:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, label=label, linewidth=1.2, marker="." if len(xs) < 30 else None)
    for label, value in (hlines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.annotate(label, (ax.get_xlim()[0], value), fontsize=8, va="bottom", color="dimgrey")
    if logy and all(y > 0 for points in lines.values() for _, y in points):
        ax.set_yscale("log")
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _teacher_scores(run_dir: Path) -> dict[str, float]:
    path = run_dir / "results.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    scores = {}
    for row in rows if isinstance(rows, list) else []:
        if row.get("kind") in ("teacher", "ensemble"):
            value = next((v for k, v in row.items() if k.endswith("_mean") and isinstance(v, (int, float))), None)
            if value is not None:
                scores[row["model"]] = float(value)
    return scores


def write_report(run_dir: Path) -> Path:
    """Draw the plots into `<run_dir>/report/` and write `<run_dir>/report.md`; return its path."""
    run_dir = Path(run_dir)
    steps, events = _records(run_dir)
    plots_dir = run_dir / "report"
    plots_dir.mkdir(exist_ok=True)
    flat = lambda series: {f"{phase} {label}".strip(): pts for phase, by in series.items()  # noqa: E731
                           for label, pts in by.items()}
    losses = _series(steps, lambda k: k.removeprefix("loss/") if k.startswith("loss/") else None)
    evals = _series(steps, lambda k: "" if k.startswith("eval/test_") and k.count("/") == 1 else None)
    eval_keys = sorted({k for r in steps for k in r if k.startswith("eval/test_") and k.count("/") == 1})
    weights = _series(steps, lambda k: k.removeprefix("teacher/") if k.startswith("teacher/") and
                      k.endswith(("/weight", "/effective_weight")) else None)
    latency = _series(steps, lambda k: k.removeprefix("teacher/").replace("/latency_ms", " round trip")
                      .replace("/wait_ms", " wait") if k.startswith("teacher/") and
                      k.endswith(("/latency_ms", "/wait_ms")) else None)
    metric = eval_keys[0].removeprefix("eval/") if eval_keys else "metric"
    drawn = {
        "loss": _plot(plots_dir / "loss.png", "Loss terms", "loss", flat(losses), logy=True),
        "eval": _plot(plots_dir / "eval.png", f"Held-out {metric} (teachers dashed)", metric, flat(evals),
                      _teacher_scores(run_dir) if "accuracy" in metric else None),
        "teacher_weights": _plot(plots_dir / "teacher_weights.png", "Teacher weights", "weight", flat(weights)),
        "teacher_latency": _plot(plots_dir / "teacher_latency.png", "Teacher round trip and wait",
                                 "ms", flat(latency), logy=True),
    }
    lines = [f"# Run {run_dir.name}", ""]
    results = run_dir / "results.md"
    if results.is_file():
        lines += [results.read_text().strip(), ""]
    captions = {"loss": "Loss terms per phase (rank 0, averaged over each logging window).",
                "eval": f"Held-out {metric} at the end of each epoch, per phase; dashed: the teachers.",
                "teacher_weights": "Each teacher's static weight and its effective share of the merged targets.",
                "teacher_latency": "Each teacher's latency, the round trip of its requests (median of the "
                                   "last 16, from send to answer), and how long the worker waited for its "
                                   "soft targets (short when requests run ahead of training)."}
    for name in PLOTS:
        if drawn[name]:
            lines += [f"## {captions[name].split(' (')[0].split(',')[0].rstrip('.')}", "", f"![{name}](report/{name}.png)",
                      "", captions[name], ""]
    if events:
        lines += ["## Events", "", "| event | details |", "|---|---|"]
        for e in events:
            details = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("event", "time"))
            lines.append(f"| {e['event']} | {details} |")
        lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
