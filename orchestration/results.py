"""The run's results table: each teacher, the KD student and the baseline, mean and spread."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.table import Table
from cluster import phase_kind


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# metric key in the phase results -> (column title, gain scale, gain unit, baseline label)
METRICS = {
    "test_accuracy": ("test accuracy", 100.0, "accuracy points", "no-KD baseline"),
    "test_cosine": ("mean cosine to the teacher (held out)", 1.0, "in mean cosine", "untrained student"),
    "average_accuracy": ("average accuracy over the tasks after the last", 100.0, "accuracy points",
                         "naive fine-tuning"),
    "test_perplexity": ("held-out perplexity (completion tokens; lower is better)", 1.0,
                        "in perplexity (negative: better)", "no-KD baseline"),
}
SECONDARY = {"test_rank_agreement": "rank agreement of pairwise similarities"}


def metric_of(phases: dict[str, dict[str, Any]]) -> str:
    """The run's headline metric: accuracy for classifiers, cosine to the teacher for encoders,
    perplexity for language models."""
    for metric in ("test_cosine", "test_perplexity"):
        if any(metric in p for p in phases.values()):
            return metric
    return "test_accuracy"


def retained_gain_lines(rows: list[dict[str, Any]], reference: str, compared: list[str]) -> list[str]:
    """How much of method `reference`'s gain over the baseline each of the `compared` methods
    keeps, as a ratio (top-k or sampled soft targets against dense ones: 1.0 keeps all of it)."""
    gains = {r["kind"]: g for r in rows if r["kind"].startswith("kd")
             for g in [kd_gains(rows).get(r["model"])] if g is not None}
    full = gains.get(f"kd:{reference}")
    if not full:
        return []
    return [f"{method} keeps {gains[f'kd:{method}'] / full:.2f} of {reference}'s gain "
            f"({gains[f'kd:{method}']:+.4f} of {full:+.4f})" for method in compared if f"kd:{method}" in gains]


def student_label(kind: str, metric: str) -> str:
    """The results table's name of a student kind; the baseline's depends on the run's metric."""
    if kind == "baseline":
        return {"test_cosine": "student (untrained)", "average_accuracy": "naive fine-tuning"}.get(metric, "student (no KD)")
    return "student (KD)" if kind == "kd" else f"student (KD: {kind[3:]})"


def summarize(teachers: dict[str, dict[str, Any]], phases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the results table. Student rows aggregate their seeds (phase `<kind>-seed<N>`)."""
    metric = metric_of(phases)
    rows = [{"model": name if t.get("ensemble") else f"teacher {name}", "kind": "ensemble" if t.get("ensemble") else "teacher",
             "metric": metric, "score_mean": t["score"], "score_std": 0.0, "seeds": 1, "parameters": t["parameters"],
             "wall_s": t["train_seconds"],
             "note": t.get("note") or ("pretrained" if t.get("pretrained") else "cached" if t.get("cached") else "trained")}
            for name, t in teachers.items()]
    kinds = sorted(dict.fromkeys(phase_kind(name) for name in phases), key=lambda k: k == "baseline")  # trained order
    for kind in kinds:
        runs = [p for name, p in sorted(phases.items()) if phase_kind(name) == kind]
        mean, std = mean_std([r[metric] for r in runs])
        row = {"model": student_label(kind, metric), "kind": kind, "metric": metric, "score_mean": mean, "score_std": std,
               "seeds": len(runs), "parameters": runs[0]["parameters"],
               "wall_s": statistics.fmean(r["train_s"] for r in runs),
               "note": ", ".join(f"{r[metric]:.4f}" for r in runs)}
        for key, title in SECONDARY.items():
            if all(key in r for r in runs):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std([r[key] for r in runs])
                row["note"] += f"; {title} {row[f'{key}_mean']:.4f} ± {row[f'{key}_std']:.4f}"
        rows.append(row)
    return rows


def kd_gains(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Gain of each KD student's headline metric over the baseline, by row label."""
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is None:
        return {}
    return {r["model"]: r["score_mean"] - baseline["score_mean"] for r in rows if r["kind"].startswith("kd")}


def gain_lines(rows: list[dict[str, Any]]) -> list[str]:
    gains = kd_gains(rows)
    if not gains:
        return []
    _, scale, unit, baseline = METRICS[rows[-1]["metric"]]
    digits = 2 if scale > 1 else 4
    if list(gains) == ["student (KD)"]:
        gains = {"KD gain": gains["student (KD)"]}
    return [f"{label} over the {baseline}: {gain * scale:+.{digits}f} {unit}" for label, gain in gains.items()]


def _score_column(rows: list[dict[str, Any]]) -> str:
    return METRICS[rows[-1]["metric"]][0] if rows else "score"


def rich_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col, justify in (("model", "left"), (_score_column(rows), "right"), ("seeds", "right"),
                         ("parameters", "right"), ("wall s", "right"), ("per seed / note", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["model"], _acc(r), str(r["seeds"]), f"{r['parameters']:,}", f"{r['wall_s']:.1f}", r["note"])
    return table


def _acc(row: dict[str, Any]) -> str:
    if row["seeds"] > 1:
        return f"{row['score_mean']:.4f} ± {row['score_std']:.4f}"
    return f"{row['score_mean']:.4f}"


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", f"| model | {_score_column(rows)} (mean ± std) | seeds | parameters | wall s | per seed / note |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {_acc(r)} | {r['seeds']} | {r['parameters']:,} | {r['wall_s']:.1f} | {r['note']} |"
              for r in rows]
    gains = gain_lines(rows)
    if gains:
        lines += [""] + [f"{line}." for line in gains]
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, rows: list[dict[str, Any]], title: str, extra: str = "") -> None:
    """`results.json` and `results.md` (the table, the gains, then `extra`)."""
    (run_dir / "results.json").write_text(json.dumps(rows, indent=2))
    (run_dir / "results.md").write_text(markdown(rows, title) + (f"\n{extra}" if extra else ""))
