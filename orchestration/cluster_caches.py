"""`distillery cache --cluster`: every alive node's caches, reported (and pruned) by a task
pinned to that node, so each node's own `$DISTILLERY_CACHE_DIR` is the one read."""

from __future__ import annotations

from typing import Any, Optional


def cluster_cache_reports(older_than_days: Optional[float], dry_run: bool) -> list[dict[str, Any]]:
    """`cluster.cache_report` on every alive node of the connected cluster, by node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster import cache_report

    task = ray.remote(cache_report)
    pending = [task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
               .remote(older_than_days, dry_run) for node in ray.nodes() if node["Alive"]]
    return ray.get(pending)
