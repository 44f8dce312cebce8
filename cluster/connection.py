"""Connecting to Ray: `RAY_ADDRESS` when set, else an embedded local cluster sized to the machine."""

from __future__ import annotations

import logging
import os

import ray

from cluster.ray_env import prepare_ray_env

logger = logging.getLogger(__name__)
NAMESPACE = "distillery"


def orchestrator_name(run: str) -> str:
    return run


def connect(*, start_local: bool = True) -> str:
    """Connect this process to Ray and return a description of where.

    Args:
        start_local: start an embedded cluster when `RAY_ADDRESS` is unset (the run command);
            client commands (`teacher add`, `status`) pass False and attach to the running one.
    """
    if ray.is_initialized():  # a second run in the same process (a sweep)
        return f"the same cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
    if not prepare_ray_env():
        logger.warning("ray was imported before cluster.ray_env.prepare_ray_env() ran; call it first "
                       "so that token authentication and loopback addresses apply")
    address = os.environ.get("RAY_ADDRESS")
    if address or not start_local:
        # A client command's console is its own answer, without Ray's connecting lines
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=True,
                 logging_level=logging.INFO if start_local else logging.WARNING)
        return f"cluster at {address or 'auto'}"
    if os.environ.get("RAY_AUTH_MODE") != "token":
        from cluster.errors import DistilleryError

        raise DistilleryError(f"RAY_AUTH_MODE is {os.environ.get('RAY_AUTH_MODE')!r}: distillery starts Ray only with "
                              f"token authentication on; unset RAY_AUTH_MODE (or set it to 'token')")
    # "local": always a new cluster, never one a stale /tmp/ray/ray_current_cluster points at
    ray.init(address="local", namespace=NAMESPACE, _node_ip_address="127.0.0.1")  # token authentication on
    return f"embedded local cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
