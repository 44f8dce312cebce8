"""The Serve deployment that answers batches with soft-target records.

`build_teacher_app(args)` is a Serve application builder: the same app starts from Python
(`serve.run(build_teacher_app(args), name=..., route_prefix=None)`), from
`serve run teachers.deployment:build_teacher_app` and from a Serve config file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from ray import serve
from ray.serve import Application

from cluster import log_own_warnings, open_audit_log, ray_options, work_device
from ingest import Batch, BatchId
from teachers.loaded import LoadedTeacher, TeacherAppArgs
from teachers.request_batching import RequestBatcher, records_together, request_key, request_tokens
from teachers.teacher_set import PEER_PREFIX, live_version

if TYPE_CHECKING:
    from teachers.soft_targets import SoftTargets

logger = logging.getLogger(__name__)


class LiveWeights:
    """A replica's follower of its peer trainer: long-polls the run's orchestrator for newer
    published weights, fetches them from the object store and reports the key it serves."""

    def __init__(self, teacher: LoadedTeacher, run: str, replica: str):
        import ray

        from cluster import NAMESPACE, orchestrator_name

        self.teacher, self.replica = teacher, replica
        self.peer = teacher.args.name.removeprefix(PEER_PREFIX)
        self.orchestrator = ray.get_actor(orchestrator_name(run), namespace=NAMESPACE)
        self.key: Optional[tuple[int, int]] = None
        self.ready = threading.Event()
        threading.Thread(target=self._follow, name=f"live-weights-{self.peer}", daemon=True).start()

    def _follow(self) -> None:
        import ray

        while True:
            try:
                found = ray.get(self.orchestrator.wait_published.remote(self.peer, self.key))
            except Exception as exc:  # noqa: BLE001 - the run ended (orchestrator gone): stop following
                logger.info("peer %s: stopped following weights (%s)", self.peer, type(exc).__name__)
                return
            if found is None:
                continue
            key, (ref,) = found
            self.teacher.replace_weights(ray.get(ref), live_version(self.teacher.args.name, key))
            self.key = tuple(key)
            self.ready.set()
            self.orchestrator.peer_loaded.remote(self.peer, self.replica, self.key)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        if not self.ready.wait(timeout_s):
            raise TimeoutError(f"teacher {self.teacher.args.name!r}: its peer trainer published no weights "
                               f"within {timeout_s:g}s")


@serve.deployment
class TeacherDeployment:
    def __init__(self, args: TeacherAppArgs):
        log_own_warnings()
        # A replica with a fraction of a core must not spawn one intra-op thread per core.
        torch.set_num_threads(max(1, int(args.resources.num_cpus)))
        self.teacher = LoadedTeacher.load(args, work_device(args.resources.num_gpus, f"teacher {args.name!r}"))
        self.live = None
        if args.live_run:
            self.live = LiveWeights(self.teacher, args.live_run, serve.get_replica_context().replica_tag)
        self.audit = open_audit_log(args.audit_dir, f"answered-{args.name}")
        self.batcher = None
        if args.batching.active(str(self.teacher.device)):
            self.batcher = RequestBatcher(partial(records_together, self.teacher.records),
                                          max_tokens=args.batching.max_tokens, wait_s=args.batching.wait_ms / 1000)
        logger.info("teacher %s version %s ready (%s)", args.name, self.teacher.version, self.teacher.output_space)

    def __del__(self):
        if getattr(self, "audit", None) is not None:  # Serve's shutdown of the replica: upload what is pending
            self.audit.close()

    def describe(self) -> dict[str, Any]:
        return self.teacher.describe()

    async def __call__(self, request: dict[str, Any]) -> list[SoftTargets]:
        """Soft targets for several batches in one call (one forward over all of them, shared
        with other requests waiting meanwhile: `RequestBatcher`).

        `request = {"batches": [{"batch_id": str, "inputs": float32 [B_i, F]}, ...]}`; returns one
        record per batch, in order. Several batches per request spread the fixed cost of a
        Serve call (routing, serialization) over more samples.
        """
        if not isinstance(request, dict):  # e.g. an HTTP request, had another tool given the app a route
            raise TypeError(f"teacher {self.teacher.args.name!r} answers Serve handle calls only (gRPC callers go "
                            f"through the run's ingress), not {type(request).__name__}")
        if self.live is not None and not self.live.ready.is_set():
            await asyncio.to_thread(self.live.wait_ready)
        settings = {key: request[key] for key in ("temperature", "top_k", "dense_max_classes", "target_kind")
                    if request.get(key)}
        batches = [Batch.of_inputs(BatchId.parse(b["batch_id"]), b["inputs"]) for b in request["batches"]]
        if self.batcher is None:
            records = await asyncio.to_thread(self.teacher.records, batches, **settings)
        else:
            records = await self.batcher.submit((batches, settings), key=request_key(batches, settings),
                                                tokens=request_tokens(batches))
        if self.audit is not None and records:  # in a thread: an audit on object storage uploads now and then
            await asyncio.to_thread(self.audit.write, {"kind": "answered", "teacher": self.teacher.args.name,
                              "version": records[0].teacher_version, "set": request.get("teacher_set_version"),
                              "phase": request.get("phase"), "batches": [str(r.batch_id) for r in records]})
        return records

    def perplexity(self, inputs: np.ndarray) -> dict[str, float]:
        """Held-out perplexity parts of a causal LM teacher (`LoadedTeacher.perplexity`)."""
        return self.teacher.perplexity(inputs)

    def generate(self, prompts: np.ndarray, sampling: dict[str, Any]) -> dict[str, Any]:
        """Completions of a causal LM teacher (`LoadedTeacher.generate`): sequence-level KD data."""
        return self.teacher.generate(prompts, sampling)

    def score_proposals(self, sequences: np.ndarray, start: np.ndarray, top_k: int, temperature: float,
                        seed: int) -> dict[str, Any]:
        """Speculative KD's scoring call (`LoadedTeacher.score_proposals`)."""
        return self.teacher.score_proposals(sequences, start, top_k, temperature, seed)


def deployment_options(args: TeacherAppArgs) -> dict[str, Any]:
    """Serve options of a teacher's deployment from `args.resources`: a fixed replica count, or
    Serve autoscaling on the requests in flight."""
    res = args.resources
    replicas: dict[str, Any] = {"num_replicas": res.replicas}
    if res.autoscaling is not None:
        replicas = {"autoscaling_config": res.autoscaling.model_dump()}
    return {"name": f"teacher_{args.name}", **replicas,
            "max_ongoing_requests": res.max_ongoing_requests, "max_queued_requests": res.max_queued_requests,
            "ray_actor_options": ray_options(res.num_cpus, res.num_gpus, res.custom, res.labels),
            # Students send many small requests; a log line per request would drown the job's log.
            "logging_config": {"enable_access_log": False}}


def build_teacher_app(args: TeacherAppArgs | dict) -> Application:
    """Application builder for one teacher; resources and replicas come from `args.resources`."""
    args = TeacherAppArgs.model_validate(args) if isinstance(args, dict) else args
    return TeacherDeployment.options(**deployment_options(args)).bind(args)


def running_replicas(app_names: dict[str, str]) -> dict[str, int]:
    """Running replicas of each teacher's Serve app ({teacher: app name}), from Serve's status."""
    applications = serve.status().applications
    out = {}
    for teacher, app in app_names.items():
        deployment = applications[app].deployments.get(f"teacher_{teacher}") if app in applications else None
        out[teacher] = int(deployment.replica_states.get("RUNNING", 0)) if deployment else 0
    return out
