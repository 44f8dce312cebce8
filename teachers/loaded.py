"""A teacher model loaded for answering batches, wherever it runs: a Serve replica
(`teachers.deployment`), the standalone gRPC server (`teachers.grpc_service`), precompute,
the in-worker baselines (`teachers.local`).

`TeacherAppArgs` says how to build one (paths and kwargs, no tensors): it is the argument
model of the Serve application builder `teachers.deployment.build_teacher_app`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from cluster import ResourcesConfig, fetch_file, work_dtype
from ingest import Batch
from teachers.arrow_codec import model_inputs
from teachers.backend import (FeatureHooks, ResolvedModel, dummy_inputs, load_teacher, loading_kwargs, model_input,
                              model_version, output_space_of)
from teachers.device_targets import DeviceRecord, batch_generator, pack_chunks, row_chunks, split_features
from teachers.request_batching import RequestBatchingConfig
from teachers.soft_targets import SoftTargets


SCORING_SEQUENCES = 16  # sequences per forward when a language model scores a split


class TeacherAppArgs(BaseModel):
    """Everything a teacher replica needs; plain data so it travels in a Serve config."""

    model_config = ConfigDict(extra="forbid")

    name: str
    factory: str
    kwargs: dict[str, Any]
    allowed_modules: list[str]
    weights_path: Optional[str]  # None: the factory loads pretrained weights itself (models.hf)
    in_features: int
    temperature: float
    dense_max_classes: int = 1024
    top_k: int = 64
    dtype: str = "float32"  # cluster.DTYPES
    resources: ResourcesConfig = ResourcesConfig()
    batching: RequestBatchingConfig = RequestBatchingConfig()
    features: list[str] = []  # module names whose outputs travel in every record (feature-based KD)
    live_run: Optional[str] = None  # a peer of this run's online co-training: weights come from its trainer
    audit_dir: Optional[str] = None  # the run's `audit/`: each replica appends the batch ids it answered


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
        weights = fetch_file(args.weights_path) if args.weights_path else None  # a URI: downloaded once per node
        dtype = work_dtype(args.dtype, str(device), f"teacher {args.name!r}")
        device = torch.device(device)
        model = ResolvedModel(args.factory, loading_kwargs(args.factory, args.kwargs, args.allowed_modules, args.dtype),
                              tuple(args.allowed_modules))
        with torch.device(device):  # parameters made (and pretrained weights loaded) on the device, no CPU copy first
            module = load_teacher(model, weights)
        hooks = FeatureHooks(module, args.features, f"teacher {args.name!r}")
        output_space, num_classes = output_space_of(module, args.in_features)
        return cls(args, module.to(device=device, dtype=dtype), device, model_version(module, weights),
                   output_space, num_classes, hooks)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def _inputs(self, inputs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Inputs on the teacher's device; features in its dtype, token ids as they are."""
        return model_input(torch.as_tensor(inputs), self.device, self.dtype)

    @property
    def vocab_size(self) -> Optional[int]:
        """The number of token ids a token-input teacher accepts (None for feature inputs)."""
        size = getattr(self.module, "vocab_size", None)
        return int(size) if size is not None else None

    @property
    def tokenizer_hash(self) -> str:
        """The vocabulary hash of a token-input teacher ("" for feature inputs)."""
        return str(getattr(self.module, "tokenizer_hash", ""))

    def describe(self) -> dict[str, Any]:
        """What the teacher tells a run that admits it, and a gRPC caller's Describe."""
        return {"name": self.args.name, "model_version": self.version, "output_space": self.output_space,
                "num_classes": self.num_classes, "temperature": self.args.temperature,
                "parameters": sum(p.numel() for p in self.module.parameters()),
                "feature_shapes": self.feature_shapes(), "tokenizer_hash": self.tokenizer_hash,
                "vocab_size": self.vocab_size}

    def feature_shapes(self) -> dict[str, list[int]]:
        """Per-sample shape of each hooked feature (from a dummy forward)."""
        with self.lock, torch.inference_mode():
            self.module(self._inputs(dummy_inputs(self.module, 1, self.args.in_features, self.device)))
        return {name: list(value.shape[1:]) for name, value in self.hooks.take().items()}

    def records(self, batches: list[Batch], *, temperature: float | None = None,
                top_k: int | None = None, dense_max_classes: int | None = None,
                target_kind: str = "topk") -> list[SoftTargets]:
        """One record per batch (its `teacher_x`, under its `batch_id`), from a single forward
        over all the inputs (`Batch.of_inputs(batch_id, x)` makes a batch of bare inputs).

        `temperature`, `top_k` and `dense_max_classes` default to the teacher's own settings;
        students and gRPC clients send their run's (or KD method's) values. `target_kind`
        sampled: rows over more than dense_max_classes outputs carry `top_k` draws from the
        distribution instead of its top k (drawn with a generator seeded by the batch id).
        """
        inputs = model_inputs(np.concatenate([np.asarray(b.teacher_x) for b in batches]))
        pack = dict(temperature=temperature or self.args.temperature, output_space=self.output_space,
                    num_classes=self.num_classes, dense_max_classes=dense_max_classes or self.args.dense_max_classes,
                    top_k=top_k or self.args.top_k, target_kind=target_kind)
        if self.output_space.startswith("embedding:"):
            pack["dense_max_classes"] = max(pack["dense_max_classes"], self.num_classes)  # never top-k
        with self.lock, torch.inference_mode():
            if self.output_space.startswith("tokens:"):
                on_device = self._token_records(batches, torch.tensor(inputs, device=self.device), pack)
            else:
                on_device = self._row_records(batches, self._inputs(inputs), pack)
        return [record.to_host() for record in on_device]  # the lock is free: the next forward runs meanwhile

    def _meta(self, batch: Batch, pack: dict[str, Any]) -> dict[str, Any]:
        return dict(batch_id=batch.batch_id, teacher=self.args.name, teacher_version=self.version,
                    temperature=float(pack["temperature"]), output_space=self.output_space,
                    num_classes=self.num_classes)

    def _row_records(self, batches: list[Batch], inputs: torch.Tensor, pack: dict[str, Any]) -> list[DeviceRecord]:
        """One output row per input row (classifiers, encoders), with the hooked features."""
        logits = self.module(inputs)
        bounds = np.cumsum([len(b.teacher_x) for b in batches])[:-1].tolist()
        features = split_features(self.hooks.take(), bounds)
        return [DeviceRecord(self._meta(batch, pack), features=features[i], arrays=pack_chunks(
                    row_chunks(part), generator=batch_generator(batch.batch_id, self.device), **pack))
                for i, (batch, part) in enumerate(zip(batches, logits.tensor_split(bounds)))]

    def _token_records(self, batches: list[Batch], ids: torch.Tensor, pack: dict[str, Any]) -> list[DeviceRecord]:
        """A causal LM's records: one row per target position; the head runs (and the record
        packs) `head_chunk` rows at a time, so no [L, V] logits of a long sequence exist at once."""
        module = self.module
        hidden = module.target_hidden(ids)
        per_sequence = module.targets_per_sequence(ids).cpu().numpy()
        sequence_bounds = np.cumsum([0] + [len(b.teacher_x) for b in batches])
        row_bounds = np.concatenate([[0], np.cumsum(per_sequence)])[sequence_bounds]
        return [DeviceRecord(self._meta(batch, pack), pack_chunks(
                    module.head_chunks(hidden[start:end]), generator=batch_generator(batch.batch_id, self.device),
                    **pack))
                for batch, start, end in zip(batches, row_bounds[:-1], row_bounds[1:])]

    def perplexity(self, inputs: np.ndarray, sequences: int = SCORING_SEQUENCES) -> dict[str, float]:
        """A causal LM's summed negative log-likelihood (at temperature 1) of the target tokens of
        `inputs`, and their number: held-out perplexity is exp(nll / tokens). The forwards take
        `sequences` sequences at a time, the head and log-softmax `head_chunk` rows at a time."""
        inputs = model_inputs(inputs)
        nll, tokens = 0.0, 0
        with self.lock, torch.inference_mode():
            for start in range(0, len(inputs), sequences):
                part, count = self.module.summed_nll(torch.tensor(inputs[start:start + sequences], device=self.device))
                nll, tokens = nll + float(part), tokens + count
        return {"nll": nll, "tokens": tokens}

    def generate(self, prompts: np.ndarray, sampling: dict[str, Any]) -> dict[str, Any]:
        """A causal LM's sampled completions of packed prompts (`CausalLM.generate`): their
        token ids, their lengths (the end token included) and the version of the weights that
        wrote them."""
        if not hasattr(self.module, "generate") or not self.output_space.startswith("tokens:"):
            raise TypeError(f"teacher {self.args.name!r} ({self.output_space}) is not a language model; it cannot "
                            f"generate")
        ids = torch.tensor(model_inputs(prompts), device=self.device)
        with self.lock, torch.inference_mode():
            out, lengths = self.module.generate(ids, **sampling)
            return {"completions": out.cpu().numpy(), "lengths": lengths.cpu().numpy(), "version": self.version}

    def score_proposals(self, sequences: np.ndarray, start: np.ndarray, top_k: int, temperature: float,
                        seed: int) -> dict[str, Any]:
        """Speculative KD's scoring call: for each sequence, the first position at or after
        `start` whose (student-proposed) token is outside this teacher's top-`top_k`, -1 if none,
        and a replacement token sampled from this teacher (`students.speculative_batches`)."""
        from teachers.speculative_scoring import teacher_verdict

        if not self.output_space.startswith("tokens:"):
            raise TypeError(f"teacher {self.args.name!r} ({self.output_space}) is not a language model; it cannot "
                            f"score proposed tokens")
        ids = torch.tensor(model_inputs(sequences), device=self.device)
        module = self.module
        with self.lock, torch.inference_mode():
            logits = module.position_logits(ids).float()
            first, replacement = teacher_verdict(
                logits, ids, torch.as_tensor(start, device=self.device), top_k=top_k, temperature=temperature,
                generator=torch.Generator(device=self.device).manual_seed(seed), never=module.never_generated)
            return {"first_rejected": first.cpu().numpy(), "replacement": replacement.cpu().numpy(),
                    "version": self.version}

    def replace_weights(self, state: dict[str, torch.Tensor], version: str) -> None:
        """Load a live teacher's new weights (between two forwards)."""
        with self.lock:
            self.module.load_state_dict({k: v.to(device=self.device, dtype=self.dtype) if v.is_floating_point()
                                         else v.to(self.device) for k, v in state.items()})
            self.version = version
