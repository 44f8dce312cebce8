"""The Serve deployment that answers batches with soft-target records.

`build_teacher_app(args)` is a Serve application builder: the same app starts from Python
(`serve.run(build_teacher_app(args), name=..., route_prefix=None)`), from
`serve run teachers.deployment:build_teacher_app` and from a Serve config file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import grpc
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from cluster.config import ResourcesConfig
from teachers.arrow_codec import model_inputs
from teachers.backend import FeatureHooks, ResolvedModel, load_teacher, model_version, output_space_of
from teachers.soft_targets import SoftTargets, concat_rows, pack_soft_targets
from teachers.teacher_set import PEER_PREFIX, live_version

logger = logging.getLogger(__name__)


class TeacherAppArgs(BaseModel):
    """Everything a teacher replica needs; plain data so it travels in a Serve config."""

    model_config = ConfigDict(extra="forbid")

    name: str
    factory: str
    kwargs: dict[str, Any]
    allowed_modules: list[str]
    weights_path: Optional[str]  # None: the factory loads pretrained weights itself (teachers.hf)
    in_features: int
    temperature: float
    dense_max_classes: int = 1024
    top_k: int = 64
    resources: ResourcesConfig = ResourcesConfig()
    ingress_token_sha256: Optional[str] = None  # callers through Serve's gRPC ingress must send its token
    features: list[str] = []  # module names whose outputs travel in every record (feature-based KD)
    live_run: Optional[str] = None  # a peer of this run's online co-training: weights come from its trainer


@dataclass
class LoadedTeacher:
    """A teacher's module on its device, with what its records carry: version and output space."""

    args: TeacherAppArgs
    module: torch.nn.Module
    device: torch.device
    version: str
    output_space: str
    num_classes: int
    hooks: FeatureHooks
    lock: threading.Lock = field(default_factory=threading.Lock)  # a weight refresh never meets a forward

    @classmethod
    def load(cls, args: TeacherAppArgs, device: str | torch.device = "cpu") -> "LoadedTeacher":
        module = load_teacher(ResolvedModel(args.factory, args.kwargs, tuple(args.allowed_modules)), args.weights_path)
        hooks = FeatureHooks(module, args.features, f"teacher {args.name!r}")
        output_space, num_classes = output_space_of(module, args.in_features)
        device = torch.device(device)
        return cls(args, module.to(device), device, model_version(module, args.weights_path), output_space,
                   num_classes, hooks)

    @property
    def vocab_size(self) -> Optional[int]:
        """The number of token ids a token-input teacher accepts (None for feature inputs)."""
        size = getattr(self.module, "vocab_size", None)
        return int(size) if size is not None else None

    @property
    def tokenizer_hash(self) -> str:
        """The vocabulary hash of a token-input teacher ("" for feature inputs)."""
        return str(getattr(self.module, "tokenizer_hash", ""))

    def feature_shapes(self) -> dict[str, list[int]]:
        """Per-sample shape of each hooked feature (from a dummy forward)."""
        with self.lock, torch.inference_mode():
            self.module(torch.zeros(1, self.args.in_features, device=self.device))
        return {name: list(value.shape[1:]) for name, value in self.hooks.take().items()}

    def records(self, batches: list[tuple[str, np.ndarray]], *, temperature: float | None = None,
                top_k: int | None = None, dense_max_classes: int | None = None) -> list[SoftTargets]:
        """One record per `(batch_id, inputs)`, from a single forward over all the inputs.

        `temperature`, `top_k` and `dense_max_classes` default to the teacher's own settings;
        students and gRPC clients send their run's (or KD method's) values.
        """
        inputs = model_inputs(np.concatenate([np.asarray(x) for _, x in batches]))
        pack = dict(temperature=temperature or self.args.temperature, output_space=self.output_space,
                    dense_max_classes=dense_max_classes or self.args.dense_max_classes,
                    top_k=top_k or self.args.top_k)
        if self.output_space.startswith("embedding:"):
            pack["dense_max_classes"] = max(pack["dense_max_classes"], self.num_classes)  # never top-k
        if self.output_space.startswith("tokens:"):
            return self._token_records(batches, torch.tensor(inputs, device=self.device), pack)
        with self.lock, torch.inference_mode():
            logits = self.module(torch.tensor(inputs, device=self.device)).float().cpu().numpy()
            version = self.version
        bounds = np.cumsum([len(x) for _, x in batches])[:-1]
        features = {name: np.split(value.to(torch.float16).cpu().numpy(), bounds)
                    for name, value in self.hooks.take().items()}
        records = []
        for i, ((batch_id, _), part) in enumerate(zip(batches, np.split(logits, bounds))):
            record = pack_soft_targets(part, batch_id=batch_id, teacher=self.args.name, teacher_version=version,
                                       **pack)
            record.features = {name: parts[i] for name, parts in features.items()}
            records.append(record)
        return records

    def _token_records(self, batches: list[tuple[str, np.ndarray]], ids: torch.Tensor,
                       pack: dict[str, Any]) -> list[SoftTargets]:
        """A causal LM's records: one row per target position; the head runs (and top-k packs)
        `head_chunk` rows at a time, so no [L, V] logits of a long sequence exist at once."""
        module = self.module
        with self.lock, torch.inference_mode():
            hidden = module.target_hidden(ids)
            per_sequence = module.targets_per_sequence(ids).cpu().numpy()
            version = self.version
            sequence_bounds = np.cumsum([0] + [len(x) for _, x in batches])
            row_bounds = np.concatenate([[0], np.cumsum(per_sequence)])[sequence_bounds]
            records = []
            for (batch_id, _), start, end in zip(batches, row_bounds[:-1], row_bounds[1:]):
                chunks = [pack_soft_targets(logits.float().cpu().numpy(), batch_id=batch_id, teacher=self.args.name,
                                            teacher_version=version, **pack)
                          for logits in module.head_chunks(hidden[start:end])]
                records.append(concat_rows(chunks) if chunks else pack_soft_targets(
                    np.zeros((0, self.num_classes), np.float32), batch_id=batch_id, teacher=self.args.name,
                    teacher_version=version, **pack))
        return records

    def perplexity(self, inputs: np.ndarray) -> dict[str, float]:
        """A causal LM's summed negative log-likelihood (at temperature 1) of the target tokens of
        `inputs`, and their number: held-out perplexity is exp(nll / tokens)."""
        from teachers.token_targets import target_labels

        ids = torch.tensor(model_inputs(inputs), device=self.device)
        labels = target_labels(ids, self.module.specials)
        nll, start = 0.0, 0
        with self.lock, torch.inference_mode():
            for logits in self.module.head_chunks(self.module.target_hidden(ids)):
                part = labels[start:start + len(logits)]
                nll += float(torch.nn.functional.cross_entropy(logits.float(), part, reduction="sum"))
                start += len(logits)
        return {"nll": nll, "tokens": int(len(labels))}

    def generate(self, prompts: np.ndarray, sampling: dict[str, Any]) -> dict[str, Any]:
        """A causal LM's sampled completions of right-padded prompts (`CausalLM.generate`) and the
        version of the weights that wrote them."""
        if not hasattr(self.module, "generate") or not self.output_space.startswith("tokens:"):
            raise TypeError(f"teacher {self.args.name!r} ({self.output_space}) is not a language model; it cannot "
                            f"generate")
        ids = torch.tensor(model_inputs(prompts), device=self.device)
        with self.lock, torch.inference_mode():
            out = self.module.generate(ids, eos=self.module.eos, **sampling)
            return {"completions": out.cpu().numpy(), "version": self.version}

    def score_proposals(self, sequences: np.ndarray, start: np.ndarray, top_k: int, temperature: float,
                        seed: int) -> dict[str, Any]:
        """Speculative KD's scoring call: for each sequence, the first position at or after
        `start` whose (student-proposed) token is outside this teacher's top-`top_k`, -1 if none,
        and a replacement token sampled from this teacher (`students.speculative`)."""
        from teachers.speculative_scoring import teacher_verdict

        if not self.output_space.startswith("tokens:"):
            raise TypeError(f"teacher {self.args.name!r} ({self.output_space}) is not a language model; it cannot "
                            f"score proposed tokens")
        ids = torch.tensor(model_inputs(sequences), device=self.device)
        module = self.module
        with self.lock, torch.inference_mode():
            logits = module.position_logits(ids)
            first, replacement = teacher_verdict(
                logits, ids, torch.as_tensor(start, device=self.device), top_k=top_k, temperature=temperature,
                pad=module.specials.pad, generator=torch.Generator(device=self.device).manual_seed(seed),
                never=module.layout_tokens)
            return {"first_rejected": first.cpu().numpy(), "replacement": replacement.cpu().numpy(),
                    "version": self.version}

    def replace_weights(self, state: dict[str, torch.Tensor], version: str) -> None:
        """Load a live teacher's new weights (between two forwards)."""
        with self.lock:
            self.module.load_state_dict({k: v.to(self.device) for k, v in state.items()})
            self.version = version


class LiveWeights:
    """A replica's follower of its peer trainer: long-polls the run's orchestrator for newer
    published weights, fetches them from the object store and reports the key it serves."""

    def __init__(self, teacher: LoadedTeacher, run: str, replica: str):
        import ray

        from cluster.connection import NAMESPACE, orchestrator_name

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
        # A replica with a fraction of a core must not spawn one intra-op thread per core.
        torch.set_num_threads(max(1, int(args.resources.num_cpus)))
        device = "cuda" if args.resources.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.teacher = LoadedTeacher.load(args, device)
        self.live = None
        if args.live_run:
            self.live = LiveWeights(self.teacher, args.live_run, serve.get_replica_context().replica_tag)
        logger.info("teacher %s version %s ready (%s)", args.name, self.teacher.version, self.teacher.output_space)

    def describe(self) -> dict[str, Any]:
        t = self.teacher
        return {"name": t.args.name, "model_version": t.version, "output_space": t.output_space,
                "num_classes": t.num_classes, "temperature": t.args.temperature,
                "parameters": sum(p.numel() for p in t.module.parameters()), "feature_shapes": t.feature_shapes(),
                "tokenizer_hash": t.tokenizer_hash}

    def __call__(self, request: dict[str, Any]) -> list[SoftTargets]:
        """Soft targets for several batches in one call (one forward over all of them).

        `request = {"batches": [{"batch_id": str, "inputs": float32 [B_i, F]}, ...]}`; returns one
        record per batch, in order. Several batches per request spread the fixed cost of a
        Serve call (routing, serialization) over more samples.
        """
        if not isinstance(request, dict):  # e.g. an HTTP request through a proxy route
            raise TypeError(f"teacher {self.teacher.args.name!r} answers Serve handle calls and gRPC "
                            f"(TeacherService), not {type(request).__name__}")
        if self.live is not None:
            self.live.wait_ready()
        settings = {key: request[key] for key in ("temperature", "top_k", "dense_max_classes") if request.get(key)}
        return self.teacher.records([(b["batch_id"], b["inputs"]) for b in request["batches"]], **settings)

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


    # --- TeacherService through Serve's gRPC ingress (teachers/proto/teacher_service.proto) ------
    def _refused(self, grpc_context) -> bool:
        from teachers.grpc_service import token_problem

        digest = self.teacher.args.ingress_token_sha256
        problem = (token_problem(grpc_context.invocation_metadata(), digest) if digest
                   else "this teacher's run did not turn on the gRPC ingress (serve.grpc_port)")
        if problem:
            grpc_context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            grpc_context.set_details(f"teacher {self.teacher.args.name!r}: {problem}")
        return problem is not None

    def Describe(self, request, grpc_context):
        from teachers.grpc_service import SoftTargetResponder
        from teachers.proto import teacher_service_pb2 as pb

        return pb.DescribeResponse() if self._refused(grpc_context) else SoftTargetResponder(self.teacher).describe()

    async def SoftTargets(self, request_stream, grpc_context):
        from teachers.errors import SoftTargetDecodeError
        from teachers.grpc_service import SoftTargetResponder

        if self._refused(grpc_context):
            return
        responder = SoftTargetResponder(self.teacher)
        try:
            async for request in request_stream:
                for response in await asyncio.to_thread(responder.feed, request):
                    yield response
        except SoftTargetDecodeError as exc:
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(str(exc))


def build_teacher_app(args: TeacherAppArgs | dict) -> Application:
    """Application builder for one teacher; resources and replicas come from `args.resources`."""
    args = TeacherAppArgs.model_validate(args) if isinstance(args, dict) else args
    res = args.resources
    return TeacherDeployment.options(
        name=f"teacher_{args.name}",
        num_replicas=res.replicas,
        max_ongoing_requests=res.max_ongoing_requests,
        max_queued_requests=res.max_queued_requests,
        ray_actor_options={"num_cpus": res.num_cpus, "num_gpus": res.num_gpus},
        # Students send many small requests; a log line per request would drown the job's log.
        logging_config={"enable_access_log": False},
    ).bind(args)
