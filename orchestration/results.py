"""The run's results table: each teacher, the KD student and the baseline, mean and spread."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.table import Table


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _kind(phase: str) -> str:
    """`kd-seed0` -> "kd", `kd-dkd-seed0` -> "kd:dkd", `baseline-seed0` -> "baseline"."""
    stem = phase.rsplit("-seed", 1)[0]
    return "kd:" + stem[3:] if stem.startswith("kd-") else stem


def _label(kind: str) -> str:
    if kind == "baseline":
        return "student (no KD)"
    return "student (KD)" if kind == "kd" else f"student (KD: {kind[3:]})"


def summarize(teachers: dict[str, dict[str, Any]], phases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the results table. Student rows aggregate their seeds (phase `<kind>-seed<N>`)."""
    rows = [{"model": f"teacher {name}", "kind": "teacher", "accuracy_mean": t["test_accuracy"], "accuracy_std": 0.0,
             "seeds": 1, "parameters": t["parameters"], "wall_s": t["train_seconds"],
             "note": "cached" if t.get("cached") else "trained"} for name, t in teachers.items()]
    kinds = sorted(dict.fromkeys(_kind(name) for name in phases), key=lambda k: k == "baseline")  # trained order
    for kind in kinds:
        runs = [p for name, p in sorted(phases.items()) if _kind(name) == kind]
        mean, std = mean_std([r["test_accuracy"] for r in runs])
        rows.append({"model": _label(kind), "kind": kind,
                     "accuracy_mean": mean, "accuracy_std": std, "seeds": len(runs),
                     "parameters": runs[0]["parameters"], "wall_s": statistics.fmean(r["train_s"] for r in runs),
                     "note": ", ".join(f"{r['test_accuracy']:.4f}" for r in runs)})
    return rows


def kd_gains(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy gain of each KD student over the no-KD baseline, by row label."""
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is None:
        return {}
    return {r["model"]: r["accuracy_mean"] - baseline["accuracy_mean"] for r in rows if r["kind"].startswith("kd")}


def gain_lines(rows: list[dict[str, Any]]) -> list[str]:
    gains = kd_gains(rows)
    if list(gains) == ["student (KD)"]:
        return [f"KD gain over the no-KD baseline: {gains['student (KD)'] * 100:+.2f} accuracy points"]
    return [f"{label} over the no-KD baseline: {gain * 100:+.2f} accuracy points" for label, gain in gains.items()]


def rich_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col, justify in (("model", "left"), ("test accuracy", "right"), ("seeds", "right"),
                         ("parameters", "right"), ("wall s", "right"), ("per seed / note", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["model"], _acc(r), str(r["seeds"]), f"{r['parameters']:,}", f"{r['wall_s']:.1f}", r["note"])
    return table


def _acc(row: dict[str, Any]) -> str:
    if row["seeds"] > 1:
        return f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}"
    return f"{row['accuracy_mean']:.4f}"


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", "| model | test accuracy (mean ± std) | seeds | parameters | wall s | per seed / note |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {_acc(r)} | {r['seeds']} | {r['parameters']:,} | {r['wall_s']:.1f} | {r['note']} |"
              for r in rows]
    gains = gain_lines(rows)
    if gains:
        lines += [""] + [f"{line}." for line in gains]
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, rows: list[dict[str, Any]], title: str) -> None:
    (run_dir / "results.json").write_text(json.dumps(rows, indent=2))
    (run_dir / "results.md").write_text(markdown(rows, title))
