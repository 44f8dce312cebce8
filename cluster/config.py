"""Run configuration: YAML read with a safe loader into strict pydantic models.

Every model refuses unknown keys. `load_run_config` turns any problem into a `ConfigError`
whose lines start with the field path (`student.zero_stage`) and say what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.errors import ConfigError
from cluster.factory import DEFAULT_ALLOWED_MODULES
from cluster.paths import paths_outside_roots

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
NAME_HINT = "lowercase letters, digits, '-' or '_', starting with a letter or digit, at most 48 chars"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a valid name: use {NAME_HINT}")
    return value


class ModelSpec(Strict):
    """A torch module built by a factory; `in_features`/`num_classes` default to the dataset's."""

    factory: str = Field(description="'package.module:function' under an allowed module")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ResourcesConfig(Strict):
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(16, ge=1, description="requests one replica works on at once")
    max_queued_requests: int = Field(
        -1, ge=-1, description="requests a caller may queue for the app before Serve rejects more "
                               "(back-pressure, retried by the students); -1: no limit")


class TeacherTrainingConfig(Strict):
    """How a teacher without a weights file is trained (the result is cached)."""

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0


class TeacherConfig(Strict):
    """One teacher: a model, where its weights come from, its weight in the mix, its resources."""

    name: str
    model: ModelSpec
    weights: Optional[str] = Field(None, description="safetensors file; omitted: train and cache")
    pretrained: bool = Field(False, description="the factory loads pretrained weights itself (teachers.hf): "
                                                "no training and no weights file")
    training: TeacherTrainingConfig = Field(default_factory=TeacherTrainingConfig)
    weight: float = Field(1.0, gt=0)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    _name = field_validator("name")(check_name)

    @model_validator(mode="after")
    def _one_weight_source(self) -> "TeacherConfig":
        if self.pretrained and self.weights:
            raise ValueError("weights: a pretrained teacher loads its own weights; drop weights or pretrained")
        return self


class DataConfig(Strict):
    """digits: scikit-learn's 8x8 digits (classification). digits_views: the same digits as
    cross-modal pairs of sensor views (students/paired_data.py). stdlib_docstrings: windows of
    tokens from the docstrings of Python's standard library (sentence-embedding distillation).
    stdlib_functions: the standard library's functions as prompt (signature) and completion
    (docstring) token sequences for causal language models (students/lm_data.py)."""

    dataset: Literal["digits", "digits_views", "stdlib_docstrings", "stdlib_functions"] = "digits"
    teacher_column: Optional[Literal["image", "profile", "lowres"]] = Field(
        None, description="digits_views: the view the teachers read")
    student_column: Optional[Literal["image", "profile", "lowres"]] = Field(
        None, description="digits_views: the view the students read")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="digits: share of the test split")
    split_seed: int = 0
    student_train_samples: Optional[int] = Field(
        None, ge=10, description="labelled samples the students see (the transfer set); all if omitted"
    )
    tokenizer: Optional[str] = Field(
        None, description="text: the tokenizer's model folder, pkg:<package>/<folder> or hub id")
    sequence_length: int = Field(32, ge=8, le=8192, description="text: tokens per window or sequence")
    train_windows: int = Field(2048, ge=16, description="text: training windows (stdlib_functions: sequences)")
    test_windows: int = Field(256, ge=16, description="text: held-out windows (stdlib_functions: sequences)")
    embedding_dim: int = Field(384, ge=1, description="text: width of the sentence embeddings")
    generated: Optional[str] = Field(
        None, description="stdlib_functions: a Parquet folder written by `distillery generate`; the students "
                          "train on its teacher-written completions instead of the training split")

    @model_validator(mode="after")
    def _dataset_fields(self) -> "DataConfig":
        if self.dataset in TEXT_DATASETS and not self.tokenizer:
            raise ValueError(f"tokenizer: {self.dataset} needs data.tokenizer (the teacher's model folder; for "
                             f"stdlib_functions the shipped pkg:students/tokenizers/stdlib-bpe-1024 works)")
        views = (self.teacher_column, self.student_column)
        if self.dataset == "digits_views" and None in views:
            raise ValueError("digits_views needs data.teacher_column and data.student_column (image, profile or "
                             "lowres): the view each side reads")
        if self.dataset != "digits_views" and views != (None, None):
            raise ValueError(f"teacher_column/student_column: only the paired dataset digits_views has views; "
                             f"{self.dataset} has one input")
        return self


TEXT_DATASETS = ("stdlib_docstrings", "stdlib_functions")


class StudentConfig(Strict):
    model: ModelSpec
    epochs: int = Field(30, ge=1)
    micro_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    zero_stage: int = Field(2, ge=0, le=3)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    log_every: int = Field(10, ge=1, description="steps between progress/metric records")
    max_failures: int = Field(
        1, ge=-1, description="times Ray Train restarts the worker group from the last checkpoint after a "
                              "worker fails (a killed process, a lost node, an error); -1: without limit")


class TermConfig(Strict):
    """One weighted loss term of `distill.terms` (names and params: students/kd_terms.py)."""

    name: str
    weight: float = Field(1.0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)


STRATEGIES = ("static", "confidence", "entropy", "label_agreement", "gating", "route")


class WeightingConfig(Strict):
    """How the teachers' soft targets merge, per sample (students/weighting.py): static teacher
    weights, or weights that also follow each teacher's confidence, entropy, agreement with the
    label, a learned gate, or a data column that routes each sample to one teacher."""

    strategy: Literal[STRATEGIES] = "static"
    sharpness: float = Field(1.0, gt=0, description="confidence/entropy/label_agreement: divides the score "
                                                    "before the softmax over teachers (smaller: sharper)")
    gate_hidden: int = Field(32, ge=1, description="gating: hidden width of the gate network")
    gate_loss_weight: float = Field(1.0, ge=0, description="gating: weight of the gate's label loss")
    column: Optional[str] = Field(None, description="route: the data column that picks the teacher")
    routes: dict[str, str] = Field(default_factory=dict, description="route: column value -> teacher name")

    @model_validator(mode="after")
    def _route_fields(self) -> "WeightingConfig":
        if self.strategy == "route" and (not self.column or not self.routes):
            raise ValueError("route needs column (a data column, e.g. task) and routes ({value: teacher})")
        if self.strategy != "route" and (self.column or self.routes):
            raise ValueError(f"column/routes belong to strategy route, not {self.strategy}")
        return self


class GeneratorConfig(Strict):
    """Synthetic inputs where teachers and student disagree, labelled by the served teachers and
    learned from with the real data (students.generator)."""

    samples: int = Field(16, ge=2, description="synthetic samples per step and worker")
    weight: float = Field(1.0, ge=0, description="weight of the KD term on the synthetic samples")
    z_dim: int = Field(32, ge=1, description="the generator's noise width")
    hidden: int = Field(128, ge=1, description="the generator's hidden width")
    lr: float = Field(1e-3, gt=0, description="the generator's Adam learning rate")


class SpeculativeConfig(Strict):
    """Speculative KD (students/speculative.py): the student completes each training prompt,
    the teacher keeps the proposed tokens inside its top-k and replaces the first one outside
    it with its own sample, and the student learns the interleaved text with the method's
    token-level terms."""

    top_k: int = Field(25, ge=1, description="a proposed token is kept when it is among the teacher's k likeliest")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of student proposals and teacher "
                                                      "replacements; 0: greedy")
    max_rounds: int = Field(8, ge=1, description="teacher scoring calls per batch at most (each keeps a block of "
                                                 "proposals up to its first rejection)")
    teacher: Optional[str] = Field(None, description="the teacher that scores proposals (default: the first)")


class MethodConfig(Strict):
    """One KD method of `distill.methods`. A bare list of terms is read as `{terms: [...]}`."""

    terms: list[TermConfig] = Field(min_length=1)
    teachers: Optional[list[str]] = Field(
        None, description="the run's teachers this method learns from (all when omitted)")
    weighting: Optional[WeightingConfig] = Field(None, description="overrides distill.weighting")
    teacher_snapshot: Optional[str] = Field(
        None, description="a method listed before this one: its trained student of the same seed, frozen and "
                          "served, is this method's only teacher (born-again networks)")
    generator: Optional[GeneratorConfig] = Field(None, description="overrides distill.generator")
    train_data: Literal["real", "generated"] = Field(
        "real", description="generated: fine-tune on the teachers' completions of the prompts (sequence-level KD; "
                            "the `generate` section says how they are sampled)")
    speculative: Optional[SpeculativeConfig] = Field(
        None, description="learn on the student's own completions of the prompts, corrected by the teacher")
    quantize: Optional[Literal[8, 4]] = Field(
        None, description="quantized distillation: train with linear weights fake-quantized to 8 or 4 bits per "
                          "channel and export the integers; the baseline is also scored after post-training "
                          "quantization to the same bits")
    top_k: Optional[int] = Field(None, ge=1, description="overrides distill.top_k: the teachers send this "
                                                         "method top-k soft targets")
    dense: Optional[bool] = Field(None, description="true: the teachers send this method dense logits; "
                                                    "false: always top-k")

    @model_validator(mode="after")
    def _one_target_form(self) -> "MethodConfig":
        if self.dense and self.top_k is not None:
            raise ValueError("top_k: a method with dense: true gets whole distributions; drop top_k or dense")
        return self

    def distill_of(self, distill: "DistillConfig") -> "DistillConfig":
        """The run's distill section with this method's soft-target form."""
        update: dict[str, Any] = {}
        if self.top_k is not None or self.dense is False:
            update = {"top_k": self.top_k or distill.top_k, "dense_max_classes": 1}
        if self.dense:
            update = {"dense_max_classes": 1 << 30}
        return distill.model_copy(update=update)


class DistillConfig(Strict):
    mode: Literal["online", "offline"] = Field(
        "online", description="online: live Serve teachers; offline: the store `distillery precompute` wrote")
    store_dir: str = Field("soft_targets", description="root of the offline soft-target store")
    loss: Literal["hinton_kd", "logit_mse"] = "hinton_kd"
    terms: Optional[list[TermConfig]] = Field(
        None, description="weighted loss terms; when given, replaces `loss` and `alpha`")
    methods: Optional[dict[str, MethodConfig]] = Field(
        None, description="named KD methods to compare in one run: a KD student per method and seed")
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    generator: Optional[GeneratorConfig] = Field(
        None, description="also learn on synthetic inputs where teachers and student disagree")

    @field_validator("methods", mode="before")
    @classmethod
    def _terms_only_methods(cls, value):
        if isinstance(value, dict):
            return {name: {"terms": method} if isinstance(method, list) else method for name, method in value.items()}
        return value

    @field_validator("methods")
    @classmethod
    def _method_names(cls, value):
        earlier: list[str] = []
        for name, method in (value or {}).items():
            check_name(name)
            if method.teacher_snapshot is not None and method.teacher_snapshot not in earlier:
                raise ValueError(f"{name}.teacher_snapshot: {method.teacher_snapshot!r} is not a method listed "
                                 f"before {name!r} (listed before it: {earlier}); the snapshot's student must "
                                 f"train first")
            if method.teacher_snapshot is not None and any("teacher" in t.params for t in method.terms):
                raise ValueError(f"{name}.terms: a snapshot teacher sends no features; use response terms "
                                 f"(ce, kd, dkd, ...) with teacher_snapshot")
            if method.teacher_snapshot is not None and (method.teachers or method.weighting):
                raise ValueError(f"{name}: teacher_snapshot is the method's one teacher; drop teachers/weighting")
            earlier.append(name)
        return value
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the hard-label CE term")
    temperature: float = Field(4.0, gt=0)
    prefetch: int = Field(8, ge=1, description="batches requested ahead per teacher")
    batches_per_request: int = Field(4, ge=1, description="batches one teacher request carries")
    top_k: int = Field(64, ge=1)
    dense_max_classes: int = Field(1024, ge=2, description="output spaces up to this size travel dense")
    request_timeout_s: float = Field(60.0, gt=0, description="deadline for one teacher answer")
    request_retries: int = Field(
        2, ge=0, description="a failed or late teacher request is sent again this many times (with backoff) "
                             "before the teacher counts as lost")
    slow_teacher_fallback: bool = Field(
        True, description="a batch whose teacher misses its deadline goes on with the teachers that answered "
                          "(their weights renormalised) instead of waiting for the retry")
    on_teacher_lost: Literal["drop", "fail"] = Field(
        "drop", description="a teacher that stays unreachable after its retries: drop it from the teacher set "
                            "(with a warning; the other weights renormalise) or fail the run")
    on_no_teacher: Literal["fail", "pause"] = Field(
        "fail", description="when no teacher is left: fail, or pause (up to pause_timeout_s) until one is added; "
                            "a KD student never trains on no targets")
    pause_timeout_s: float = Field(600.0, gt=0, description="how long a paused run waits for a teacher")
    version_poll_every: int = Field(1, ge=1, description="steps between teacher-set version checks")


class ServeConfig(Strict):
    """Serve's proxies. `grpc_port` turns on the gRPC ingress (TeacherService) on the head node,
    which listens plaintext on every interface of that node: callers must send the bearer token
    in `grpc_token_file`; put TLS termination in front of it for traffic that leaves the cluster."""

    proxy: Literal["disabled", "head"] = "disabled"
    grpc_port: Optional[int] = Field(None, ge=1, le=65535, description="Serve gRPC ingress port; off if omitted")
    grpc_token_file: Optional[str] = Field(None, description="file holding the ingress bearer token")

    @model_validator(mode="after")
    def _ingress_needs_token(self) -> "ServeConfig":
        if self.grpc_port is not None and not self.grpc_token_file:
            raise ValueError("grpc_token_file is required when grpc_port is set: Serve's gRPC ingress "
                             "accepts only calls that carry its bearer token")
        return self


class ContinualConfig(Strict):
    """Lifelong continual distillation: the students learn a sequence of tasks, one phase per
    task, each phase starting from the student of the previous task. After each task that
    student's snapshot is served as a versioned teacher for the next task (learning without
    forgetting: use the `lwf` term). The baseline (`run.baseline`) is naive fine-tuning on the
    same sequence."""

    column: str = Field("task", description="the data column that names each sample's task")
    tasks: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2,
                             description="the task values of `column`, in the order they are learned")
    replay_samples: int = Field(0, ge=0, description="training samples of each earlier task kept in memory and "
                                                     "trained on again with every later task (every method and "
                                                     "the baseline alike); 0: none")
    replay_targets: Literal["snapshot", "stored"] = Field(
        "snapshot", description="the soft targets of replayed samples in KD methods: snapshot: the previous task's "
                                "served student labels them again; stored: the student that had just learned their "
                                "task labelled them once, into the run's offline store (dark experience replay)")

    @model_validator(mode="after")
    def _stored_needs_replay(self) -> "ContinualConfig":
        if self.replay_targets == "stored" and not self.replay_samples:
            raise ValueError("replay_targets: stored keeps soft targets of replayed samples; set replay_samples > 0")
        return self

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"tasks repeat a task: {value}")
        return value


class PeerConfig(Strict):
    """One student trainer of an online co-training run; it also serves as teacher `peer-<name>`."""

    name: str
    model: Optional[ModelSpec] = Field(None, description="the peer's model; default: student.model")
    learns_from: Optional[list[str]] = Field(
        None, description="the peers whose live endpoints teach this one; default: every other peer. "
                          "[]: labels only (a teacher that keeps training while it teaches)")

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        check_name(value)
        if len(value) > 43:
            raise ValueError(f"{value!r}: at most 43 chars (it is served as teacher 'peer-<name>')")
        return value


class OnlineConfig(Strict):
    """Online co-training: the peers train at the same time, each in its own Ray Train trainer,
    and each is served as a teacher endpoint whose weights are refreshed from its trainer
    (through the object store) while it trains. Peers that learn from others use
    `distill.terms` on those live endpoints (deep mutual learning); the baseline
    (`run.baseline`) trains every peer alone on labels."""

    peers: list[PeerConfig] = Field(min_length=2)
    refresh_every: int = Field(10, ge=1, description="steps between weight publications of each trainer")
    max_staleness: int = Field(20, ge=1, description="most steps a trainer may run ahead of the weights its "
                                                     "endpoint serves; it waits when further ahead")
    start_timeout_s: float = Field(600.0, gt=0, description="how long a trainer waits for the peers it learns "
                                                            "from to start or finish a round")

    @model_validator(mode="after")
    def _consistent(self) -> "OnlineConfig":
        names = [p.name for p in self.peers]
        if len(set(names)) != len(names):
            raise ValueError(f"peers: names must be unique, got {names}")
        for peer in self.peers:
            unknown = sorted(set(peer.learns_from or []) - set(names))
            if unknown or peer.name in (peer.learns_from or []):
                raise ValueError(f"peers.{peer.name}.learns_from: {sorted(unknown) or [peer.name]} is not another "
                                 f"peer of the run ({names})")
        if not any(self.teachers_of(p.name) for p in self.peers):
            raise ValueError("peers: no peer learns from another; give some peer a learns_from")
        if self.refresh_every > self.max_staleness:
            raise ValueError(f"refresh_every ({self.refresh_every}) must be <= max_staleness "
                             f"({self.max_staleness}): weights published less often are always too stale")
        return self

    def teachers_of(self, peer: str) -> list[str]:
        """The peers that teach `peer`."""
        spec = next(p for p in self.peers if p.name == peer)
        return spec.learns_from if spec.learns_from is not None else [p.name for p in self.peers if p.name != peer]


class GenerateConfig(Strict):
    """Sequence-level KD: how `distillery generate` (or a run with a `train_data: generated`
    method) has the teacher endpoints complete the prompts, through Ray Data and Serve, into a
    Parquet dataset the students are then fine-tuned on."""

    teacher: Optional[str] = Field(None, description="the teacher that writes the completions (default: the first)")
    prompts: Literal["student", "train"] = Field(
        "student", description="student: the prompts of the students' training samples; train: every training prompt")
    samples_per_prompt: int = Field(1, ge=1, le=64)
    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="sample among the k likeliest tokens; 0: all")
    seed: int = 0
    batch_size: int = Field(64, ge=1, description="prompts per generate call")
    output: Optional[str] = Field(None, description="the Parquet folder; default <output_dir>/<run>/generated")


class RunSection(Strict):
    name: str
    output_dir: str = "runs"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    baseline: bool = True
    allowed_factory_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_MODULES))
    mlflow_tracking_uri: Optional[str] = Field(
        None, description="also log metrics to this MLflow tracking server or store (e.g. http://mlflow:5000, "
                          "file:///shared/mlruns); needs `pip install mlflow-skinny`")
    mlflow_experiment: str = Field("distillery", description="the MLflow experiment the run's phases log to")

    _name = field_validator("name")(check_name)


class RunConfig(Strict):
    """The whole experiment: one YAML file."""

    run: RunSection
    data: DataConfig = Field(default_factory=DataConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    student: StudentConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    continual: Optional[ContinualConfig] = Field(None, description="learn a sequence of tasks (lifelong)")
    online: Optional[OnlineConfig] = Field(None, description="co-train peer students that teach each other")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)

    @model_validator(mode="after")
    def _unique_teacher_names(self) -> "RunConfig":
        names = [t.name for t in self.teachers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"teachers: names must be unique, repeated: {duplicates}")
        if self.distill.terms and self.distill.methods:
            raise ValueError("distill: give either terms (one KD student) or methods (several), not both")
        methods = self.distill.methods or {}
        all_terms = [t for method in methods.values() for t in method.terms] + (self.distill.terms or [])
        names = {t.name for t in all_terms} if all_terms else {self.distill.loss}
        if self.distill.mode == "offline" and "logit_mse" in names:
            raise ValueError("distill.loss: logit_mse needs dense logits, the offline store holds top-k "
                             "log-probabilities; use hinton_kd with distill.mode offline")
        if self.distill.mode == "offline" and any("teacher" in t.params for t in all_terms):
            raise ValueError("distill.terms: the offline store holds no teacher features; feature and "
                             "attention terms need distill.mode online")
        if self.distill.mode == "offline":
            self._check_offline(methods)
        snapshots = sorted(n for n, m in methods.items() if m.teacher_snapshot)
        if snapshots and self.distill.mode == "offline":
            raise ValueError(f"distill.methods ({', '.join(snapshots)}): teacher_snapshot serves a trained student "
                             f"with Ray Serve; it needs distill.mode online")
        self._check_weighting([t.name for t in self.teachers])
        self._check_continual(snapshots)
        self._check_online(snapshots)
        self._check_generator()
        self._check_language_model(snapshots, all_terms)
        speculative = sorted(n for n, m in methods.items() if m.speculative)
        for name in speculative:
            method = methods[name]
            if self.data.dataset != "stdlib_functions" or method.train_data == "generated" or not self.teachers:
                raise ValueError(f"distill.methods.{name}.speculative: speculative KD completes the prompts of "
                                 f"stdlib_functions with the student and the run's teachers (train_data: real)")
            if method.speculative.teacher and method.speculative.teacher not in [t.name for t in self.teachers]:
                raise ValueError(f"distill.methods.{name}.speculative.teacher: {method.speculative.teacher!r} is not "
                                 f"a teacher of the run")
            if not any(t.name not in ("ce", "byot") for t in method.terms):
                raise ValueError(f"distill.methods.{name}.terms: speculative KD learns the interleaved text from the "
                                 f"teacher; give a KD term (kd, reverse_kl, jsd)")
        if speculative:
            self._refuse_zero3(f"distill.methods ({', '.join(speculative)}): the student proposes tokens with its "
                               f"full weights on every rank")
        quantized = sorted(n for n, m in methods.items() if m.quantize)
        if quantized:
            self._refuse_zero3(f"distill.methods ({', '.join(quantized)}): quantized distillation parametrizes each "
                               f"layer's whole weight, which ZeRO-3 would shard (training hangs)")
        if snapshots and self.data.dataset == "digits_views" and self.data.teacher_column != self.data.student_column:
            raise ValueError(f"distill.methods ({', '.join(snapshots)}): a snapshot teacher is a student, which reads "
                             f"{self.data.student_column}, but teachers are sent {self.data.teacher_column}; "
                             f"use teacher_snapshot with one view")
        if snapshots:
            self._refuse_zero3(f"distill.methods ({', '.join(snapshots)}): teacher_snapshot exports the student's "
                               f"weights from rank 0")
        return self


    def _check_offline(self, methods: dict[str, "MethodConfig"]) -> None:
        """The store holds each teacher's top-`distill.top_k` targets of the real training split."""
        if self.data.dataset == "stdlib_docstrings":
            raise ValueError("distill.mode: the offline store holds top-k class or token records, not sentence "
                             "embeddings; use distill.mode online for stdlib_docstrings")
        for name, method in methods.items():
            where = f"distill.methods.{name}"
            if method.dense or (method.top_k is not None and method.top_k != self.distill.top_k):
                raise ValueError(f"{where}: the offline store holds top-{self.distill.top_k} targets (distill.top_k); "
                                 f"a method asking for {'dense targets' if method.dense else f'top-{method.top_k}'} "
                                 f"needs distill.mode online or a store precomputed with that top_k")
            if method.speculative or method.train_data == "generated":
                raise ValueError(f"{where}: {'speculative KD' if method.speculative else 'train_data: generated'} "
                                 f"asks the teachers for new text while it trains; use distill.mode online")

    def _refuse_zero3(self, what_needs_full_weights: str) -> None:
        """Features that read the whole student on one rank cannot run on ZeRO-3's shards."""
        if self.student.zero_stage == 3:
            raise ValueError(f"{what_needs_full_weights}, which ZeRO-3 shards; use student.zero_stage 0, 1 or 2")

    def _check_continual(self, snapshots: list[str]) -> None:
        if self.continual is None:
            return
        where = "continual"
        if self.teachers or snapshots:
            raise ValueError(f"{where}: each task's teacher is the student of the task before; drop teachers and "
                             f"distill.methods.*.teacher_snapshot")
        if self.distill.mode == "offline" or self.data.dataset != "digits":
            raise ValueError(f"{where}: task sequences run online on the digits dataset (its task column); "
                             f"got distill.mode {self.distill.mode}, data.dataset {self.data.dataset}")
        self._refuse_zero3(f"{where}: each task hands the student's weights to the next from rank 0")

    def _check_language_model(self, snapshots: list[str], terms: list[TermConfig]) -> None:
        """Token-level KD teaches per target position; what needs whole samples is refused."""
        generated = [n for n, m in (self.distill.methods or {}).items() if m.train_data == "generated"]
        if (generated or self.data.generated) and (self.data.dataset != "stdlib_functions" or not self.teachers):
            raise ValueError(f"distill.methods ({', '.join(generated) or 'data.generated'}): sequence-level KD "
                             f"fine-tunes on completions the run's teachers write; it needs teachers and "
                             f"data.dataset stdlib_functions")
        if self.data.dataset != "stdlib_functions":
            return
        where = "data.dataset (stdlib_functions)"
        student_tokenizer = self.student.model.kwargs.get("tokenizer")
        if student_tokenizer is not None and student_tokenizer != self.data.tokenizer:
            raise ValueError(f"student.model.kwargs.tokenizer: {student_tokenizer!r} is not the run's data.tokenizer "
                             f"{self.data.tokenizer!r}; the student reads and predicts the run's token ids")
        if snapshots:
            raise ValueError(f"{where}: teacher_snapshot ({', '.join(snapshots)}) serves classifier students; "
                             f"language-model students learn from the run's teachers")
        if any("teacher" in t.params for t in terms) or any(t.name == "byot" for t in terms):
            raise ValueError(f"{where}: token-level KD uses response terms (ce, kd, reverse_kl, jsd, ...); "
                             f"feature, attention and self-distillation terms read whole samples")
        strategies = [self.distill.weighting] + [m.weighting for m in (self.distill.methods or {}).values()
                                                  if m.weighting]
        teacher = self.generate.teacher
        if teacher is not None and teacher not in [t.name for t in self.teachers]:
            raise ValueError(f"generate.teacher: {teacher!r} is not a teacher of the run "
                             f"({[t.name for t in self.teachers]})")
        if any(w.strategy in ("gating", "route") for w in strategies):
            raise ValueError(f"{where}: gating and route weigh whole samples; token-level KD merges teachers per "
                             f"token with static, confidence, entropy or label_agreement")

    def _check_generator(self) -> None:
        methods = self.distill.methods or {}
        users = [(f"distill.methods.{n}", m) for n, m in methods.items() if m.generator or self.distill.generator]
        if not methods and self.distill.generator:
            users = [("distill.generator", None)]
        for where, method in users:
            if not self.teachers or (method is not None and method.teacher_snapshot):
                raise ValueError(f"{where}: the generator's samples are labelled by the run's served teachers; "
                                 f"give teachers (a snapshot teacher is not one)")
            if self.distill.mode == "offline" or self.data.dataset != "digits" or self.online or self.continual:
                raise ValueError(f"{where}: synthetic inputs are labelled live: use distill.mode online on the "
                                 f"digits dataset, without online or continual sections")
            self._refuse_zero3(f"{where}: the generator's step runs the student with rank 0's full weights")

    def _check_online(self, snapshots: list[str]) -> None:
        if self.online is None:
            return
        where = "online"
        if self.teachers or self.distill.methods or self.continual:
            raise ValueError(f"{where}: the peers are each other's teachers; drop teachers, distill.methods and "
                             f"continual (give the learning peers' loss in distill.terms)")
        if self.distill.mode == "offline" or self.data.dataset in TEXT_DATASETS:
            raise ValueError(f"{where}: peers serve live class distributions; use distill.mode online and a "
                             f"classification dataset (got {self.distill.mode}, {self.data.dataset})")
        if self.data.teacher_column != self.data.student_column:
            raise ValueError(f"{where}: a peer reads the student's view, but teachers are sent "
                             f"{self.data.teacher_column}; use one view")
        if any("teacher" in t.params for t in self.distill.terms or []):
            raise ValueError(f"{where}: peers serve no features; use response terms (kd, dkd, ...) in distill.terms")
        if self.distill.weighting.strategy in ("gating", "route"):
            raise ValueError(f"{where}: distill.weighting.strategy {self.distill.weighting.strategy} names fixed "
                             f"teachers; peers merge with static, confidence, entropy or label_agreement")
        self._refuse_zero3(f"{where}: each trainer publishes its weights from rank 0")

    def _check_weighting(self, teachers: list[str]) -> None:
        """Method teacher lists and routes name teachers of the run; per-sample strategies need classes."""
        methods = self.distill.methods or {}
        for where, subset, weighting, terms in [("distill", None, self.distill.weighting, [])] + [
                (f"distill.methods.{n}", m.teachers, m.weighting, m.terms) for n, m in methods.items()]:
            unknown = sorted(set(subset or []) - set(teachers))
            if unknown:
                raise ValueError(f"{where}.teachers: {unknown} are not teachers of the run ({teachers})")
            asked = {str(ref).partition("/")[0] for t in terms for ref in _refs(t.params.get("teacher"))}
            if subset and asked - set(subset):
                raise ValueError(f"{where}.terms: features of teachers {sorted(asked - set(subset))} are asked for, "
                                 f"but the method learns from {subset} only")
            if weighting is None:
                continue
            routed = sorted(set(weighting.routes.values()) - set(subset or teachers))
            if routed:
                raise ValueError(f"{where}.weighting.routes: {routed} are not teachers of this method "
                                 f"({subset or teachers})")
            if weighting.strategy != "static" and self.data.dataset == "stdlib_docstrings":
                raise ValueError(f"{where}.weighting.strategy: {weighting.strategy} weighs class distributions; "
                                 f"sentence-embedding teachers merge with static weights")


def _refs(value: Any) -> list[Any]:
    """A term's `teacher` param: one feature reference or a list of them."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


M = TypeVar("M", bound=BaseModel)


def _format_validation_error(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against the docs of this section)"
        elif "input" in err and err["type"] not in ("missing",):
            message = f"{message} (got {err['input']!r})"
        problems.append(f"{path}: {message}")
    return problems


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML with the safe loader; `!!python` tags and friends are refused."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"<yaml>: not safe, well-formed YAML: {exc}"]) from exc


def validate_model(model_type: Type[M], data: Any, source: str) -> M:
    """Validate parsed data into `model_type`, raising `ConfigError` with field paths."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"<root>: expected a mapping, got {type(data).__name__}"])
    try:
        return model_type.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_validation_error(exc)) from None


def read_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file with the safe loader; a missing file is a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["<file>: not found; pass the path of a YAML config file"])
    return parse_yaml(path.read_text(), str(path))


def load_yaml_model(model_type: Type[M], path: str | Path) -> M:
    return validate_model(model_type, read_yaml_file(path), str(path))


def load_run_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> RunConfig:
    """Load and validate a run config. `overrides` maps dotted paths to values (CLI flags)."""
    data = read_yaml_file(path)
    given = frozenset(k for k, v in (overrides or {}).items() if v is not None)
    outside = paths_outside_roots(data, skip=given)
    if outside:
        raise ConfigError(str(path), outside)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[leaf] = value
    return validate_model(RunConfig, data, str(path))
