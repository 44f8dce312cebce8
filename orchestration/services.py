"""What a run starts on the cluster besides its trainers: Serve (with the optional gRPC
ingress and its token) and the run's orchestrator actor; and how it shuts them down."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from cluster import teacher_cache_dir
from orchestration.config import RunConfig

if TYPE_CHECKING:
    from students import Dataset

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

    options: dict[str, Any] = {}
    location = ProxyLocation.Disabled if cfg.serve.proxy == "disabled" else ProxyLocation.HeadOnly
    if cfg.serve.grpc_port is not None:
        from ray.serve.config import gRPCOptions

        location = ProxyLocation.HeadOnly
        options["grpc_options"] = gRPCOptions(port=cfg.serve.grpc_port, grpc_servicer_functions=[GRPC_SERVICER])
    serve.start(proxy_location=location, http_options={"host": "127.0.0.1"}, **options)
    if cfg.serve.grpc_port is not None:
        _check_grpc_ingress(cfg.serve.grpc_port)


def _check_grpc_ingress(port: int) -> None:
    """Serve keeps the options it first started with: say so when they lack this run's ingress."""
    from ray.serve.context import _get_global_client

    running = _get_global_client().get_serve_details().get("grpc_options") or {}
    if running.get("port") != port or GRPC_SERVICER not in (running.get("grpc_servicer_functions") or []):
        from cluster import ConfigError

        raise ConfigError("<running Serve instance>", [
            f"serve.grpc_port: Serve is already running on this cluster with gRPC options {running}, so the "
            f"TeacherService ingress on port {port} cannot start; set serve.grpc_port to the running port if it "
            f"already serves {GRPC_SERVICER}, or stop Serve (`serve shutdown`, which deletes every Serve app) first"])


GRPC_SERVICER = "teachers.proto.teacher_service_pb2_grpc.add_TeacherServiceServicer_to_server"


def ingress_token_digest(cfg: RunConfig) -> Optional[str]:
    """sha256 of the Serve gRPC ingress token (replicas compare digests, never see the token)."""
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
