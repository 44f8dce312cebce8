"""`report.md` of a run, with PNG plots drawn from its `metrics.jsonl` and results.

Plots (rank 0's records) show each student kind (`kd`, `kd:dkd`, `baseline`, ...: a method,
whatever its seed) in one colour: its mean over the seeds, with the spread between the lowest
and the highest seed shaded. The loss terms get a panel each; the evaluation metric over
steps has the teachers' scores as dashed lines, labelled in the legend; each teacher's weight
(static and effective) has a panel per student kind; each teacher's latency (the round trip
of its requests, and the worker's wait for its soft targets) is drawn over all phases. Events
(teachers added, removed or lost, resumes, stops) are listed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from cluster import phase_kind, read_metrics

PLOTS = ("loss", "eval", "teacher_weights", "teacher_latency")
SIZE = (8, 4.5)  # inches at 100 dpi: 800 x 450 pixels
Seeds = list[list[tuple[int, float]]]  # one line's points, per seed (or per phase)


def _records(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rank 0's step records and the run's events, in the order they were written."""
    steps, events = [], []
    for record in read_metrics(run_dir):
        if "event" in record:
            events.append(record)
        elif record.get("rank", 0) == 0 and "step" in record and "phase" in record:
            steps.append(record)
    return steps, events


def _series(steps: list[dict[str, Any]], key_of) -> dict[str, dict[str, dict[str, list[tuple[int, float]]]]]:
    """{label: {kind: {phase: [(step, value)]}}} for the keys `key_of(key)` maps to a label
    (None: skip); a phase's kind is its method whatever the seed (`cluster.phase_kind`)."""
    out: dict[str, dict[str, dict[str, list[tuple[int, float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for record in steps:
        for key, value in record.items():
            label = key_of(key)
            if label is not None and isinstance(value, (int, float)) and math.isfinite(value):
                out[label][phase_kind(record["phase"])][record["phase"]].append((record["step"], float(value)))
    return out


def _band(seeds: Seeds) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps, and at each the mean, lowest and highest value over the seeds that logged it."""
    at: dict[int, list[float]] = defaultdict(list)
    for points in seeds:
        for step, value in points:
            at[step].append(value)
    steps = sorted(at)
    return (steps, [sum(at[s]) / len(at[s]) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])


def _panels(path: Path, title: str, ylabel: str, panels: dict[str, dict[str, Seeds]],
            hlines: Optional[dict[str, float]] = None, logy: bool = False,
            dashed: tuple[str, ...] = ()) -> bool:
    """One PNG with a panel per entry of `panels` ({panel title: {line label: points per seed}});
    a line's colour follows the first word of its label (a student kind, a teacher) in every
    panel, and labels ending in one of `dashed` are dashed; False (nothing written) when there
    is nothing to draw."""
    panels = {name: lines for name, lines in panels.items() if lines}
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({label.split(" ")[0] for lines in panels.values() for label in lines})
    palette = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    colour = {key: palette(i % palette.N) for i, key in enumerate(keys)}
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=SIZE, dpi=100, squeeze=False)
    for ax, (name, lines) in zip(axes.flat, sorted(panels.items())):
        for label in sorted(lines):
            steps, mean, low, high = _band(lines[label])
            spread = len(lines[label]) > 1
            key = label.split(" ")[0]
            ax.plot(steps, mean, color=colour[key], linewidth=1.4, marker="." if len(steps) < 30 else None,
                    linestyle="--" if label.endswith(dashed) and dashed else "-",
                    label=f"{label} (mean of {len(lines[label])})" if spread else label)
            if spread:
                ax.fill_between(steps, low, high, color=colour[key], alpha=0.2, linewidth=0)
        for i, (label, value) in enumerate(sorted((hlines or {}).items(), key=lambda kv: -kv[1])):
            ax.axhline(value, linestyle=("--", ":", "-.")[i % 3], linewidth=1, color="dimgrey",
                       label=f"{label}: {value:.3g}")
        values = [v for series in lines.values() for points in series for _, v in points]
        if logy and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name if len(panels) > 1 else title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if len(panels) > 1:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _lines(by_kind: dict[str, dict[str, list[tuple[int, float]]]]) -> dict[str, Seeds]:
    """{kind: points per phase (seed)}."""
    return {kind: list(phases.values()) for kind, phases in by_kind.items()}


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
    losses = _series(steps, lambda k: k.removeprefix("loss/") if k.startswith("loss/") else None)
    eval_keys = sorted({k for r in steps for k in r if k.startswith("eval/test_") and k.count("/") == 1})
    metric = eval_keys[0].removeprefix("eval/") if eval_keys else "metric"
    evals = _series(steps, lambda k: metric if k == f"eval/{metric}" else None)
    weights = _series(steps, lambda k: k.removeprefix("teacher/").replace("/effective_weight", " effective")
                      .replace("/weight", " static") if k.startswith("teacher/") and
                      k.endswith(("/weight", "/effective_weight")) else None)
    latency = _series(steps, lambda k: k.removeprefix("teacher/").replace("/latency_ms", " round trip")
                      .replace("/wait_ms", " wait") if k.startswith("teacher/") and
                      k.endswith(("/latency_ms", "/wait_ms")) else None)
    by_kind: dict[str, dict[str, Seeds]] = defaultdict(dict)  # teacher weights: a panel per student kind
    for label, kinds in weights.items():
        for kind, phases in kinds.items():
            by_kind[f"student {kind}"][label] = list(phases.values())
    drawn = {
        "loss": _panels(plots_dir / "loss.png", "Loss terms", "loss",
                        {term: _lines(kinds) for term, kinds in losses.items()}, logy=True),
        "eval": _panels(plots_dir / "eval.png", f"Held-out {metric}", metric, {metric: _lines(evals.get(metric, {}))},
                        _teacher_scores(run_dir) if "accuracy" in metric else None),
        "teacher_weights": _panels(plots_dir / "teacher_weights.png", "Teacher weights (static dashed)", "weight",
                                   by_kind, dashed=(" static",)),
        "teacher_latency": _panels(plots_dir / "teacher_latency.png", "Teacher round trip and wait", "ms",
                                   {"latency": {label: [p for phases in kinds.values() for p in phases.values()]
                                                for label, kinds in latency.items()}}, logy=True, dashed=(" wait",)),
    }
    lines = [f"# Run {run_dir.name}", ""]
    results = run_dir / "results.md"
    if results.is_file():
        lines += [results.read_text().strip(), ""]
    captions = {"loss": "Loss terms, a panel each (rank 0, averaged over each logging window): each student kind's "
                        "mean over its seeds, the spread between seeds shaded.",
                "eval": f"Held-out {metric} at the end of each epoch: each student kind's mean over its seeds, the "
                        f"spread shaded; dashed: the teachers.",
                "teacher_weights": "Each teacher's static weight and its effective share of the merged targets, a "
                                   "panel per student kind.",
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
