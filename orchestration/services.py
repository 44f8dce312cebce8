"""What a run starts on the cluster besides its trainers: Serve, the run's orchestrator actor
(which runs the optional gRPC ingress) and the ingress token's digest; and how it shuts them down."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from cluster import teacher_cache_dir
from orchestration.config import RunConfig

if TYPE_CHECKING:
    from ingest import Dataset

logger = logging.getLogger(__name__)


def start_orchestrator(cfg: RunConfig, run_dir: Path, ingress_token_sha256: Optional[str] = None,
                       dataset: Optional[Dataset] = None):
    """The run's orchestrator actor; `dataset`: the data as the driver loaded it (a streamed
    source's scans are not done twice)."""
    import ray

    from cluster import NAMESPACE, on_this_node, orchestrator_name
    from orchestration.orchestrator import Orchestrator

    name = orchestrator_name(cfg.run.name)
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass
    else:
        raise RuntimeError(f"run {cfg.run.name!r} is already running on this cluster; stop it first "
                           f"or choose another run.name")
    # On the driver's node: a node of teachers or students going away must not take the run's state with it.
    actor = ray.remote(Orchestrator).options(name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=32,
                                             **on_this_node())
    return actor.remote(cfg.run.name, cfg.model_dump(), str(run_dir), teacher_cache_dir(), ingress_token_sha256,
                        dataset)


def start_serve(cfg: RunConfig) -> None:
    from ray import serve
    from ray.serve.config import ProxyLocation

    location = ProxyLocation.Disabled if cfg.serve.proxy == "disabled" else ProxyLocation.HeadOnly
    # Serve keeps the options it was first started with; whatever they are, a teacher app never
    # gets an HTTP route (`route_prefix=None`), so no proxy reaches it.
    serve.start(proxy_location=location, http_options={"host": "127.0.0.1"})


def ingress_token_digest(cfg: RunConfig) -> Optional[str]:
    """sha256 of the gRPC ingress token (the ingress compares digests; the token stays with the driver)."""
    from cluster import ConfigError
    from teachers import token_digest

    if cfg.serve.grpc_token_file is None:
        return None
    path = Path(cfg.serve.grpc_token_file)
    token = path.read_text().strip() if path.is_file() else ""
    if not token:
        raise ConfigError(str(path), ["serve.grpc_token_file: missing or empty; write the ingress token into it"])
    return token_digest(token)


def shutdown_orchestrator(orchestrator) -> None:
    import ray

    try:
        ray.get(orchestrator.close.remote(), timeout=60)
    except Exception as exc:  # noqa: BLE001 - best effort; the actor dies with the driver anyway
        logger.warning("orchestrator close failed: %s", exc)
    ray.kill(orchestrator)
