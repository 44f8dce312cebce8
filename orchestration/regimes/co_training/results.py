"""The results of a co-training run: each peer trained with its peers ("mutual") against the
same peer trained alone on labels, mean and spread over seeds, and how stale the live
teachers' weights were."""

from __future__ import annotations

import statistics
from typing import Any

from cluster import online_phase
from orchestration.results import mean_std


MODES = {True: "mutual", False: "alone"}


def online_rows(phases: dict[str, dict[str, Any]], peers: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """One row per peer and mode that has finished phases (kind `mutual:<peer>` / `alone:<peer>`)."""
    rows = []
    for peer in peers:
        for mutual, mode in MODES.items():
            runs = [phases[p] for p in (online_phase(peer, s, mutual) for s in seeds) if p in phases]
            if not runs:
                continue
            mean, std = mean_std([r["test_accuracy"] for r in runs])
            rows.append({"model": f"peer {peer} ({'with its peers' if mutual else 'alone'})", "kind": f"{mode}:{peer}",
                         "metric": "test_accuracy", "score_mean": mean, "score_std": std, "seeds": len(runs),
                         "parameters": runs[0]["parameters"], "wall_s": statistics.fmean(r["train_s"] for r in runs),
                         "note": ", ".join(f"{r['test_accuracy']:.4f}" for r in runs) + _staleness_note(runs)})
    return rows


def _staleness_note(runs: list[dict[str, Any]]) -> str:
    if not all("online_max_staleness" in r for r in runs):
        return ""
    return (f"; staleness at most {max(r['online_max_staleness'] for r in runs)} steps, "
            f"{statistics.fmean(r['online_publications'] for r in runs):.0f} publications, "
            f"waited {sum(r['online_blocked_s'] for r in runs):.1f}s")


def online_gain_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per peer: accuracy points gained by training with its peers over training alone."""
    by_kind = {r["kind"]: r for r in rows}
    lines = []
    for kind, row in by_kind.items():
        mode, _, peer = kind.partition(":")
        alone = by_kind.get(f"alone:{peer}")
        if mode == "mutual" and alone is not None:
            lines.append(f"peer {peer}: {(row['score_mean'] - alone['score_mean']) * 100:+.2f} accuracy points with its "
                         f"peers over alone")
    return lines
