"""The results of a continual run: per method, the task-by-task accuracy matrix, the average
accuracy after the last task and backward transfer, mean and spread over seeds.

A[k][j] is the accuracy on task j's test samples after training on task k (of K), over all
classes (class-incremental: no task id at test time); the task-given matrix scores the same
outputs over task j's own classes only (task-incremental: the task id is given). Average
accuracy is mean_j A[K-1][j]; backward transfer (Lopez-Paz and Ranzato 2017) is
mean_{j<K-1} (A[K-1][j] - A[j][j]), negative when learning later tasks made the student
forget earlier ones.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

import numpy as np

from cluster import method_kind
from orchestration.results import mean_std, student_label


PHASE = re.compile(r"^(?P<kind>.+)-task(?P<k>\d+)-seed(?P<seed>-?\d+)$")
METRIC = "average_accuracy"  # the headline of a continual run's rows (orchestration.results.METRICS)
CLASS_INCREMENTAL, TASK_GIVEN = "test_accuracy", "task_given_accuracy"


def accuracy_matrix(phases: dict[str, dict[str, Any]], kind: str, seed: int, column: str,
                    tasks: list[int], metric: str = CLASS_INCREMENTAL) -> np.ndarray:
    """[K, K] A[k][j] of one method and seed (NaN where a phase has not run)."""
    out = np.full((len(tasks), len(tasks)), np.nan)
    for k in range(len(tasks)):
        metrics = phases.get(f"{kind}-task{k}-seed{seed}")
        if metrics is not None:
            out[k] = [metrics[f"{metric}/{column}{task}"] for task in tasks]
    return out


def average_accuracy(matrix: np.ndarray) -> float:
    return float(matrix[-1].mean())


def backward_transfer(matrix: np.ndarray) -> float:
    return float(np.mean([matrix[-1, j] - matrix[j, j] for j in range(len(matrix) - 1)]))


def continual_rows(phases: dict[str, dict[str, Any]], column: str, tasks: list[int]) -> list[dict[str, Any]]:
    """One row per method (the baseline last) over the seeds whose every task finished."""
    runs: dict[str, set[int]] = {}
    for name in phases:
        match = PHASE.match(name)
        if match:
            runs.setdefault(match["kind"], set()).add(int(match["seed"]))
    rows = []
    for kind in sorted(runs, key=lambda k: k == "baseline"):
        matrices = {seed: accuracy_matrix(phases, kind, seed, column, tasks) for seed in sorted(runs[kind])}
        matrices = {seed: m for seed, m in matrices.items() if not np.isnan(m).any()}
        if not matrices:
            continue
        given = [accuracy_matrix(phases, kind, seed, column, tasks, TASK_GIVEN) for seed in matrices]
        averages = [average_accuracy(m) for m in matrices.values()]
        transfers = [backward_transfer(m) for m in matrices.values()]
        (mean, std), (bwt, bwt_std) = mean_std(averages), mean_std(transfers)
        (given_mean, given_std), (given_bwt, given_bwt_std) = (mean_std([average_accuracy(m) for m in given]),
                                                               mean_std([backward_transfer(m) for m in given]))
        last = f"{kind}-task{len(tasks) - 1}-seed{min(matrices)}"
        rows.append({"model": student_label(method_kind(kind), METRIC), "kind": method_kind(kind), "metric": METRIC, "score_mean": mean,
                     "score_std": std, "seeds": len(matrices), "parameters": phases[last]["parameters"],
                     "wall_s": statistics.fmean(sum(phases[f"{kind}-task{k}-seed{s}"]["train_s"]
                                                    for k in range(len(tasks))) for s in matrices),
                     "backward_transfer_mean": bwt, "backward_transfer_std": bwt_std,
                     "matrix": np.mean(list(matrices.values()), axis=0).tolist(),
                     "task_given_mean": given_mean, "task_given_std": given_std,
                     "task_given_backward_transfer_mean": given_bwt,
                     "task_given_backward_transfer_std": given_bwt_std,
                     "task_given_matrix": np.mean(given, axis=0).tolist(),
                     "note": f"backward transfer {bwt:+.4f} ± {bwt_std:.4f}; per seed "
                             + ", ".join(f"{a:.4f}" for a in averages)
                             + f"; task given: average {given_mean:.4f} ± {given_std:.4f}, "
                               f"backward transfer {given_bwt:+.4f} ± {given_bwt_std:.4f}"})
    return rows


def matrix_markdown(rows: list[dict[str, Any]], column: str, tasks: list[int]) -> str:
    """Each method's accuracy matrices (mean over seeds): rows after training task k, columns task j."""
    head = "| after training | " + " | ".join(f"{column} {t}" for t in tasks) + " |"
    out = []
    for row in rows:
        for key, what in (("matrix", "accuracy on each task"),
                          ("task_given_matrix", "accuracy on each task, the task given")):
            out += [f"### {row['model']}: {what} (mean over {row['seeds']} seeds)", "", head,
                    "|---" * (len(tasks) + 1) + "|"]
            out += [f"| {column} {tasks[k]} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
                    for k, values in enumerate(row[key])]
            out.append("")
    return "\n".join(out)
