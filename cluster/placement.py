"""Where Ray puts work: a teacher's or a student worker's resources as Ray's scheduling options.

Node groups are chosen with Ray's custom resources (`custom: {teacher_node: 1}` needs a node
started with `--resources='{"teacher_node": N}'`) or node labels (`labels: {pool: teachers}`
needs `--labels pool=teachers`). What the run itself starts beside them (its orchestrator, the
co-training launch tasks) stays on the driver's node, as Ray Train's controller does, so that a
teacher node going away takes only its teachers with it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def check_custom_resources(custom: dict[str, float]) -> dict[str, float]:
    """Custom resource names are not Ray's built-in ones, and amounts are positive."""
    for name, amount in custom.items():
        if name in RESERVED_RESOURCES:
            raise ValueError(f"custom: {name!r} is one of Ray's own resources; give it as num_cpus/num_gpus "
                             f"(custom names a resource of your nodes' `ray start --resources`)")
        if not amount > 0:
            raise ValueError(f"custom: {name} must be above 0, got {amount!r}")
    return custom


def ray_options(num_cpus: float, num_gpus: float, custom: Optional[Mapping[str, float]] = None,
                labels: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Options for `ray.remote(...).options(...)` and Serve's `ray_actor_options`."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if custom:
        options["resources"] = dict(custom)
    if labels:
        options["label_selector"] = dict(labels)
    return options


def on_this_node() -> dict[str, Any]:
    """Options that keep an actor or task on the calling process's node (it fails with that
    node rather than moving to another one)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
