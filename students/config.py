"""The students' sections of a run config: the student and its training (`student:`), and the
KD loss, methods and teacher weighting (`distill:`), with the rules between them and the data
(`data:`, whose section lives in `ingest.config`)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from cluster import ModelSpec, ResourcesConfig, Strict, check_custom_resources, check_name



class StudentConfig(Strict):
    model: ModelSpec
    epochs: int = Field(30, ge=1)
    micro_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="after the warmup: lr throughout, or a decay to min_lr_ratio of it")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warmup (overrides warmup_ratio)")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="the share of the phase's optimizer steps that warm up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="where a decay ends, as a share of lr")
    gradient_clipping: float = Field(1.0, ge=0, description="the gradients' global norm is clipped to this (0: off)")
    activation_checkpointing: bool = Field(
        False, description="Hugging Face models recompute layer activations in the backward pass (less memory)")
    zero_stage: int = Field(2, ge=0, le=3)
    offload_optimizer: bool = Field(
        False, description="ZeRO-Offload: the optimizer states and step live in host memory (DeepSpeed's CPU "
                           "Adam), for students whose optimizer does not fit in GPU memory; needs zero_stage >= 1")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    custom: dict[str, float] = Field(
        default_factory=dict, description="Ray custom resources per worker: {student_node: 1} places the workers on "
                                          "nodes started with that resource")
    labels: dict[str, str] = Field(default_factory=dict, description="Ray node labels the workers' nodes must carry")
    serve_resources: ResourcesConfig = Field(
        default_factory=lambda: ResourcesConfig(num_cpus=0.1),
        description="the Serve replicas of a student served as a teacher (born-again and continual snapshots, "
                    "co-training peers): CPUs, GPUs, node group; a peer's replica count is online.replicas")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    log_every: int = Field(10, ge=1, description="steps between progress/metric records")
    max_failures: int = Field(
        1, ge=-1, description="times Ray Train restarts the worker group from the last checkpoint after a "
                              "worker fails (a killed process, a lost node, an error); -1: without limit")

    _custom = field_validator("custom")(check_custom_resources)

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "StudentConfig":
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer: ZeRO-Offload moves ZeRO's optimizer partitions to host memory; "
                             "use zero_stage 1, 2 or 3 with it")
        return self


class TermConfig(Strict):
    """One weighted loss term of `distill.terms` (names and params: students/kd_terms.py)."""

    name: str
    weight: float = Field(1.0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)


# The terms of the preset losses (`distill.loss`): alpha * the first + (1 - alpha) * the second.
PRESET_TERMS = {"hinton_kd": ("ce", "kd"), "logit_mse": ("ce", "logit_mse")}

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
    """Speculative KD (students/speculative_batches.py): the student completes each training prompt,
    the teacher keeps the proposed tokens inside its top-k and replaces the first one outside
    it with its own sample, and the student learns the interleaved text with the method's
    token-level terms."""

    top_k: int = Field(25, ge=1, description="a proposed token is kept when it is among the teacher's k likeliest")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of student proposals and teacher "
                                                      "replacements; 0: greedy")
    max_rounds: int = Field(8, ge=1, description="teacher scoring calls per batch at most (each keeps a block of "
                                                 "proposals up to its first rejection)")
    teacher: Optional[str] = Field(None, description="the teacher that scores proposals (default: the first)")


class TargetsConfig(Strict):
    """The soft-target form a KD method asks its teachers for."""

    kind: Literal["dense", "topk", "sampled"] = Field(
        description="dense: whole distributions; topk: the k likeliest tokens and the tail mass; sampled: k "
                    "tokens drawn from the teacher's distribution at the run's temperature, an unbiased estimate "
                    "of it (kd term only)")
    k: Optional[int] = Field(None, ge=1, description="entries per row for topk and sampled (default distill.top_k)")

    @model_validator(mode="after")
    def _k_of_sparse(self) -> "TargetsConfig":
        if self.kind == "dense" and self.k is not None:
            raise ValueError("targets.k: dense targets are whole distributions; drop k")
        return self


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
    targets: Optional[TargetsConfig] = Field(
        None, description="the soft-target form, e.g. {kind: sampled, k: 16} (replaces top_k and dense)")

    @model_validator(mode="after")
    def _one_target_form(self) -> "MethodConfig":
        if self.dense and self.top_k is not None:
            raise ValueError("top_k: a method with dense: true gets whole distributions; drop top_k or dense")
        if self.targets is not None and (self.dense is not None or self.top_k is not None):
            raise ValueError("targets: say the soft-target form once; drop top_k and dense")
        return self

    @property
    def target_form(self) -> tuple[Optional[str], Optional[int]]:
        """(dense, topk or sampled; k) as this method asks, or (None, None) for the run's form."""
        if self.targets:
            return self.targets.kind, self.targets.k
        return ("dense" if self.dense else "topk" if self.top_k is not None or self.dense is False else None,
                self.top_k)

    def distill_of(self, distill: "DistillConfig") -> "DistillConfig":
        """The run's distill section with this method's soft-target form."""
        kind, k = self.target_form
        if kind == "dense":
            return distill.model_copy(update={"dense_max_classes": 1 << 30})
        if kind is None:
            return distill
        return distill.model_copy(update={"top_k": k or distill.top_k, "dense_max_classes": 1, "target_kind": kind})


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
    target_kind: Literal["topk", "sampled"] = Field(
        "topk", description="what a record over more than dense_max_classes outputs holds: the top_k likeliest "
                            "tokens, or top_k tokens drawn from the teacher's distribution (a method's "
                            "`targets` sets it)")
    dense_max_classes: int = Field(1024, ge=2, description="output spaces up to this size travel dense")
    request_timeout_s: float = Field(60.0, gt=0, description="deadline for one teacher answer")
    request_retries: int = Field(
        2, ge=0, description="a failed or late teacher request is sent again this many times (with backoff) "
                             "before the teacher counts as lost")
    slow_teacher_fallback: bool = Field(
        True, description="a batch whose teacher misses its deadline goes on with the teachers that answered "
                          "(their weights renormalised) instead of waiting for the retry")
    on_teacher_lost: Literal["drop", "fail", "wait"] = Field(
        "drop", description="a teacher that stays unreachable after its retries: drop it from the teacher set "
                            "(with a warning; the other weights renormalise), fail the run, or wait for it "
                            "(up to pause_timeout_s: its Serve app brings its replicas back when its node is back)")
    on_no_teacher: Literal["fail", "pause"] = Field(
        "fail", description="when no teacher is left: fail, or pause (up to pause_timeout_s) until one is added; "
                            "a KD student never trains on no targets")
    pause_timeout_s: float = Field(600.0, gt=0, description="how long a paused run waits for a teacher, and "
                                                            "on_teacher_lost: wait for a lost one")
    version_poll_every: int = Field(1, ge=1, description="steps between teacher-set version checks")


# --- rules between sections (orchestration.config.RunConfig runs them in order) ----------------
def refuse_zero3(cfg: Any, what_needs_full_weights: str) -> None:
    """Features that read the whole student on one rank cannot run on ZeRO-3's shards."""
    if cfg.student.zero_stage == 3:
        raise ValueError(f"{what_needs_full_weights}, which ZeRO-3 shards; use student.zero_stage 0, 1 or 2")


def all_terms(cfg: Any) -> list[TermConfig]:
    """Every term of the run: its methods' and `distill.terms`."""
    return [t for method in (cfg.distill.methods or {}).values() for t in method.terms] + (cfg.distill.terms or [])


def method_snapshots(methods: Optional[dict[str, MethodConfig]]) -> dict[str, str]:
    """{born-again method: the method whose student (same seed) is its teacher}."""
    return {name: m.teacher_snapshot for name, m in (methods or {}).items() if m.teacher_snapshot}


def snapshot_methods(cfg: Any) -> list[str]:
    """The born-again methods (`teacher_snapshot`), sorted."""
    return sorted(method_snapshots(cfg.distill.methods))


def check_distill(cfg: Any) -> None:
    """One KD student or several methods; what the offline store can feed."""
    distill = cfg.distill
    if distill.terms and distill.methods:
        raise ValueError("distill: give either terms (one KD student) or methods (several), not both")
    terms = all_terms(cfg)
    names = {t.name for t in terms} if terms else {distill.loss}
    _check_sampled(cfg)
    if distill.mode != "offline":
        return
    if "logit_mse" in names:
        raise ValueError("distill.loss: logit_mse needs dense logits, the offline store holds top-k "
                         "log-probabilities; use hinton_kd with distill.mode offline")
    if any("teacher" in t.params for t in terms):
        raise ValueError("distill.terms: the offline store holds no teacher features; feature and "
                         "attention terms need distill.mode online")
    if cfg.data.dataset == "stdlib_docstrings":
        raise ValueError("distill.mode: the offline store holds top-k class or token records, not sentence "
                         "embeddings; use distill.mode online for stdlib_docstrings")
    for name, method in (distill.methods or {}).items():
        where = f"distill.methods.{name}"
        own = method.distill_of(distill)
        if own.dense_max_classes > distill.dense_max_classes or (own.top_k, own.target_kind) != (
                distill.top_k, distill.target_kind):
            stored, asked = _form(distill), "dense" if own.dense_max_classes > distill.dense_max_classes else _form(own)
            raise ValueError(f"{where}: the offline store holds {stored} targets (distill.top_k, distill.target_kind); "
                             f"a method asking for {asked} targets needs distill.mode online or a store "
                             f"precomputed with that form")
        if method.speculative or method.train_data == "generated":
            raise ValueError(f"{where}: {'speculative KD' if method.speculative else 'train_data: generated'} "
                             f"asks the teachers for new text while it trains; use distill.mode online")


def _form(distill: DistillConfig) -> str:
    return f"{distill.target_kind} k={distill.top_k}"


SAMPLED_TERMS = {"kd", "ce", "byot"}  # forward KL is linear in the teacher's distribution: samples estimate it
SAMPLED_WEIGHTING = {"static", "route"}  # the others score each teacher's whole distribution


def _check_sampled(cfg: Any) -> None:
    """Sampled targets estimate the teacher's distribution: only terms and weightings linear in it."""
    distill = cfg.distill
    methods = {f"distill.methods.{n}": (m.distill_of(distill), {t.name for t in m.terms},
                                         m.weighting or distill.weighting)
               for n, m in (distill.methods or {}).items()} or {
        "distill": (distill, {t.name for t in distill.terms} if distill.terms else set(PRESET_TERMS[distill.loss]),
                    distill.weighting)}
    for where, (own, names, weighting) in methods.items():
        if own.target_kind != "sampled":
            continue
        other = sorted(names - SAMPLED_TERMS)
        if other:
            raise ValueError(f"{where}: sampled targets feed the kd term (and ce, byot) only; {other} "
                             f"need topk or dense targets")
        if weighting.strategy not in SAMPLED_WEIGHTING:
            raise ValueError(f"{where}: weighting {weighting.strategy!r} scores each teacher's whole distribution, "
                             f"which sampled targets do not carry; use static or route, or topk targets")


def check_weighting(cfg: Any) -> None:
    """Method teacher lists and routes name teachers of the run; per-sample strategies need classes."""
    teachers = [t.name for t in cfg.teachers]
    methods = cfg.distill.methods or {}
    for where, subset, weighting, terms in [("distill", None, cfg.distill.weighting, [])] + [
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
        if weighting.strategy == "route" and weighting.column not in cfg.data.columns:
            raise ValueError(f"{where}.weighting.column: {cfg.data.described} has no column {weighting.column!r} "
                             f"(its columns: {sorted(cfg.data.columns) or 'none'}; a source names one in "
                             f"data.source.columns.task)")
        if weighting.strategy != "static" and cfg.data.source is None and cfg.data.dataset == "stdlib_docstrings":
            raise ValueError(f"{where}.weighting.strategy: {weighting.strategy} weighs class distributions; "
                             f"sentence-embedding teachers merge with static weights")


def same_tokenizer(student: str, data: str) -> None:
    """The student's tokenizer is the run's by content (its own folder's copy is fine)."""
    from ingest import load_tokenizer, tokenizer_hash

    theirs, ours = load_tokenizer(student), load_tokenizer(data)
    if tokenizer_hash(theirs) != tokenizer_hash(ours):
        raise ValueError(f"student.model.kwargs.tokenizer: {student!r} ({len(theirs)} tokens, hash "
                         f"{tokenizer_hash(theirs)}) is not the run's data.tokenizer {data!r} ({len(ours)} tokens, hash "
                         f"{tokenizer_hash(ours)}); the student reads and predicts the run's token ids, so give it "
                         f"the same tokenizer (distilling across tokenizers is not supported)")


def check_language_model(cfg: Any) -> None:
    """Token-level KD teaches per target position; what needs whole samples is refused."""
    if not cfg.data.language_model:
        return
    where = cfg.data.described
    student_tokenizer = cfg.student.model.kwargs.get("tokenizer")
    if student_tokenizer is not None and student_tokenizer != cfg.data.tokenizer:
        same_tokenizer(student_tokenizer, cfg.data.tokenizer)
    snapshots = snapshot_methods(cfg)
    if snapshots:
        raise ValueError(f"{where}: teacher_snapshot ({', '.join(snapshots)}) serves classifier students; "
                         f"language-model students learn from the run's teachers")
    terms = all_terms(cfg)
    if any("teacher" in t.params for t in terms) or any(t.name == "byot" for t in terms):
        raise ValueError(f"{where}: token-level KD uses response terms (ce, kd, reverse_kl, jsd, ...); "
                         f"feature, attention and self-distillation terms read whole samples")
    strategies = [cfg.distill.weighting] + [m.weighting for m in (cfg.distill.methods or {}).values() if m.weighting]
    if any(w.strategy in ("gating", "route") for w in strategies):
        raise ValueError(f"{where}: gating and route weigh whole samples; token-level KD merges teachers per "
                         f"token with static, confidence, entropy or label_agreement")


def _refs(value: Any) -> list[Any]:
    """A term's `teacher` param: one feature reference or a list of them."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def check_stream(cfg: Any) -> None:
    """A streamed source feeds the students' phases that read the transfer split batch by batch;
    what needs the whole split in a worker's memory, or batch positions, is refused."""
    source = cfg.data.source
    if source is None or not source.stream:
        return
    where = "data.source.stream"
    needs_rows = {"continual": cfg.continual is not None, "online": cfg.online is not None,
                  "data.student_train_samples": cfg.data.student_train_samples is not None,
                  "distill.generator": cfg.distill.generator is not None}
    for name, method in (cfg.distill.methods or {}).items():
        needs_rows[f"distill.methods.{name}.generator"] = method.generator is not None
        needs_rows[f"distill.methods.{name}.train_data generated"] = method.train_data == "generated"
        needs_rows[f"distill.methods.{name}.speculative"] = method.speculative is not None
    if cfg.student.lr_scheduler != "constant" or (cfg.student.warmup_ratio and not cfg.student.warmup_steps):
        raise ValueError(f"{where}: student.lr_scheduler {cfg.student.lr_scheduler} and warmup_ratio need the "
                         f"phase's length, which a streamed source's workers do not know; use lr_scheduler: "
                         f"constant with warmup_steps, or stream: false")
    refused = [name for name, given in needs_rows.items() if given]
    if refused:
        raise ValueError(f"{where}: {', '.join(refused)} read(s) the training split in memory; a streamed source "
                         f"feeds plain KD phases, methods and their baselines. Set stream: false for these")
