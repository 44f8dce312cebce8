"""The per-worker training loop (runs inside a Ray Train worker).

One worker group trains every phase of a run in order (the KD student and the no-KD
baseline for each seed), so the cost of starting workers and DeepSpeed is paid once. A phase
is a recipe: build the engine, resume, then for each batch get soft targets, compute the
loss, step, record, report, checkpoint; evaluate every epoch; score, hand over and export at
the end. Regimes add their behaviour through the job's hooks (`students.hooks`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from cluster import AuditLog, log_own_warnings, open_audit_log
from ingest import Batch, BatchId, Dataset, Split, load_dataset, plan_epoch, student_subset
from students.checkpoint import ClientState, RunProgress, read_progress, restore, save_and_report
from students.engine import build_engine, mixed_precision
from students.hooks import Phase, each, merged
from students.job import StudentJob
from students.losses import CompositeLoss
from students.phase_export import export_student
from students.reporting import OnWindowBoundary, ProgressReporter, StopCheck
from students.run_control import LocalRunControl, RunControl
from students.scoring import evaluate
from students.target_sources import soft_target_source
from teachers import SoftTargetSource

if TYPE_CHECKING:
    from ingest import ShardReader, StreamedBatches


def train_step(engine, loss_fn: CompositeLoss, batch: Batch, targets, precision: str,
               hooks=()) -> dict[str, torch.Tensor]:
    """Forward, loss, backward and optimizer step (DeepSpeed handles accumulation and ZeRO);
    hooks add loss terms (a second forward) and take their own steps after the student's."""
    x, y = torch.from_numpy(batch.x).to(engine.device), torch.from_numpy(batch.y).to(engine.device)
    with mixed_precision(engine, precision):
        logits = engine(x)
        terms = loss_fn(logits, y, targets, engine.module.features(), engine.module.projectors,
                        engine.module.gate_logits(), batch.columns)
        for extra in filter(None, each(hooks, "extra_loss", engine)):
            terms.update(extra["terms"])
            terms["total"] = terms["total"] + extra["weighted"]
    engine.backward(terms["total"])
    engine.step()
    loss_fn.step_discriminator(terms)
    with mixed_precision(engine, precision):
        terms.update(merged(hooks, "after_optimizer_step", engine))
    return terms


class _Batches:
    """The phase's batch plan: this rank's shard of every epoch, from where the phase resumes."""

    def __init__(self, train: Split, job: StudentJob, rank: int, world_size: int, epochs: int, state: ClientState):
        self.train, self.job, self.rank, self.world_size, self.epochs = train, job, rank, world_size, epochs
        self.first_epoch, self.first_batch = state.epoch, state.next_batch

    def all_of(self, epoch: int) -> list[Batch]:
        return plan_epoch(self.train, epoch=epoch, seed=self.job.seed, shard=self.rank, num_shards=self.world_size,
                          batch_size=self.job.student.micro_batch_size, length_buckets=self.job.data.length_buckets)

    def epoch(self, epoch: int) -> list[Batch]:
        batches = self.all_of(epoch)
        return batches[self.first_batch:] if epoch == self.first_epoch else batches

    def remaining(self):
        return (batch for epoch in range(self.first_epoch, self.epochs) for batch in self.epoch(epoch))

    def planned_ids(self) -> list[BatchId]:
        return [b.batch_id for e in range(self.epochs) for b in self.all_of(e)]

    @cached_property
    def batches_per_epoch(self) -> int:
        """Every epoch has as many batches (planned once: a plan copies an epoch of rows)."""
        return len(self.all_of(0))

    @property
    def steps_total(self) -> int:
        """The phase's steps, from its start."""
        return self.epochs * self.batches_per_epoch


BatchPlan = Union[_Batches, "StreamedBatches"]  # what a phase iterates: an in-memory plan or a stream


def _streamed(job: StudentJob) -> bool:
    return job.data.source is not None and job.data.source.stream


def _batch_plan(job: StudentJob, train: Split, rank: int, world_size: int, epochs: int, state: ClientState,
                stream: Optional[ShardReader]) -> BatchPlan:
    """The in-memory plan, or for a streamed source this worker's shard of the Ray Data stream
    (`stream`: its reader, if the worker started it already)."""
    if not _streamed(job):
        return _Batches(train, job, rank, world_size, epochs, state)
    from ingest import StreamedBatches

    return StreamedBatches(stream or _shard_reader(job), epochs, state, train.token_sequences)


def _shard_reader(job: StudentJob) -> "ShardReader":
    import ray.train

    from ingest import ShardReader, TRAIN_DATASET

    return ShardReader(ray.train.get_dataset_shard(TRAIN_DATASET), job.student.micro_batch_size, job.seed,
                       job.data.source.shuffle_buffer_rows)


def _training_rows(job: StudentJob, dataset: Dataset, world_size: int, epochs: int) -> Split:
    if _streamed(job):  # the rows come from the dataset shard
        return dataset.train
    train = student_subset(dataset.train, job.data.student_train_samples)
    for hook in job.hooks:
        train = hook.training_rows(train)
    if epochs and len(train.y) < world_size * job.student.micro_batch_size:
        raise ValueError(f"phase {job.phase}: {len(train.y)} training samples make no batch of "
                         f"student.micro_batch_size {job.student.micro_batch_size} on each of {world_size} workers; "
                         f"raise data.student_train_samples or lower the batch size")
    return train


def _open_source(job: StudentJob, phase: Phase, dataset: Dataset, batches: BatchPlan) -> Optional[SoftTargetSource]:
    only = next(filter(None, each(job.hooks, "teachers")), None) or (job.teachers and set(job.teachers))
    row_ids = None if _streamed(job) else phase.train.ids
    source = soft_target_source(job, phase.control, dataset.output_space, row_ids, batches.remaining, only)
    if source is not None and all(each(job.hooks, "plans_ahead")):
        source.plan(batches.remaining())
    return source


def _extra_state(loss_fn: CompositeLoss, job: StudentJob) -> dict[str, Any]:
    """Training state outside the DeepSpeed engine: the discriminator's and the hooks'."""
    state = {"adversary": loss_fn.adversary.state_dict()} if loss_fn.adversary is not None else {}
    return {**state, **merged(job.hooks, "state_dict")}


@dataclass
class _PhaseRun:
    """What one phase holds while it trains."""

    job: StudentJob
    dataset: Dataset
    phase: Phase
    state: ClientState
    batches: BatchPlan
    loss_fn: CompositeLoss
    progress: ProgressReporter
    run_progress: RunProgress
    reference: Optional[np.ndarray]
    parameters: int
    resumed_from: int
    steps_replayed: int
    audit: Optional[AuditLog] = None
    stopped: bool = False
    train_s: float = 0.0
    eval_s: float = 0.0  # evaluation time, left out of the training throughput
    targets_s: float = 0.0  # time the loop spent getting soft targets

    @property
    def engine(self) -> Any:
        return self.phase.engine

    def evaluate(self, model: Optional[torch.nn.Module] = None) -> dict[str, float]:
        return evaluate(self.engine, self.dataset, self.job.student.precision, self.phase.rank, self.phase.world_size,
                        self.reference, self.job.hooks, model=model)

    def log_metrics(self) -> dict[str, Any]:
        return merged(self.job.hooks, "log_metrics")

    def checkpoint(self, metrics: dict[str, Any]) -> None:
        save_and_report(self.engine, self.state, self.run_progress, metrics, _extra_state(self.loss_fn, self.job))


def _start_phase(job: StudentJob, control: RunControl, dataset: Dataset, run_progress: RunProgress, rank: int,
                 world_size: int, reference: Optional[np.ndarray], stream: Optional[ShardReader],
                 audit: Optional[AuditLog]) -> _PhaseRun:
    """Build the engine, resume from this phase's checkpoint if there is one, open the source."""
    epochs = job.student.epochs if job.train else 0
    train = _training_rows(job, dataset, world_size, epochs)
    micro_steps = epochs * -(-len(train.y) // (world_size * job.student.micro_batch_size))  # 0 for a stream
    engine, parameters = build_engine(job, control, world_size, dataset.in_features, micro_steps)
    state, extra_state = restore(engine) if run_progress.phase == job.phase else (ClientState(phase=job.phase), {})
    run_progress.phase = job.phase
    resumed_from = state.step
    steps_replayed = control.resumed(job.phase, state.step, job.trainer) if resumed_from and rank == 0 else 0
    batches = _batch_plan(job, train, rank, world_size, epochs, state, stream)
    phase = Phase(job.phase, job.seed, control, rank, world_size, engine, train, job.distill.temperature,
                  step=state.step)
    each(job.hooks, "before_phase", phase)
    phase.source = _open_source(job, phase, dataset, batches)
    loss_fn = CompositeLoss(job.terms, job.distill.temperature, job.weighting, dataset.num_classes, engine.device,
                            seed=job.seed)  # an adversarial discriminator starts alike on every rank
    if loss_fn.adversary is not None and "adversary" in extra_state:
        loss_fn.adversary.load_state_dict(extra_state["adversary"])
    each(job.hooks, "start", phase, extra_state)
    progress = ProgressReporter(control, job.phase, job.trainer, _unit(dataset), rank, world_size)
    progress.last_checkpoint = resumed_from or None
    progress.steps_total = getattr(batches, "steps_total", None)
    if audit is not None:  # what `distillery audit` rebuilds this rank's plan from, and where the phase resumed
        audit.write({"kind": "start", "phase": job.phase, "rank": rank, "world_size": world_size,
                     "resumed_from": state.step, "epochs": epochs,
                     "batches_per_epoch": getattr(batches, "batches_per_epoch", None)})  # None: a stream
    return _PhaseRun(job, dataset, phase, state, batches, loss_fn, progress, run_progress, reference, parameters,
                     resumed_from, steps_replayed, audit)


def _unit(dataset: Dataset) -> str:
    return "tokens" if dataset.kind == "lm" else "samples"  # a language model's rows are its target tokens


def _train_batch(run: _PhaseRun, batch: Batch) -> dict[str, torch.Tensor]:
    """Soft targets, loss, step and the hooks for one batch; the batch is recorded as applied."""
    job, source, state = run.job, run.phase.source, run.state
    planned_id = batch.batch_id  # a batch a hook makes in its place keeps the planned id in the ledger
    wait_start = time.perf_counter()
    for hook in job.hooks:
        batch = hook.next_batch(batch, state.step)
    targets = source.targets_for(batch) if source is not None else None
    served = {name: record.teacher_version for name, record in targets.records.items()} if targets else {}
    for hook in job.hooks:
        targets = hook.patch_targets(targets, batch)
    run.targets_s += time.perf_counter() - wait_start
    terms = train_step(run.engine, run.loss_fn, batch, targets, job.student.precision, job.hooks)
    state.applied(planned_id, batch.index, len(batch.y) * run.phase.world_size)
    if run.audit is not None:
        run.audit.write({"kind": "applied", "phase": job.phase, "rank": run.phase.rank, "step": state.step,
                         "batch": str(planned_id), "set": source.teacher_set.version if source is not None else None,
                         "teachers": served})
    for extra in each(job.hooks, "after_step", run.phase, state.step, targets):
        terms.update(extra)
    return terms


def _train_epochs(run: _PhaseRun) -> None:
    """Every epoch left: train its batches (reporting, checkpointing, polling the teacher set
    and the stop request as configured), then evaluate."""
    job, cfg, state, source = run.job, run.job.student, run.state, run.phase.source
    stop_requested = StopCheck(run.phase.control, cfg.log_every, run.engine.device)
    checkpoint_now = OnWindowBoundary(cfg.gradient_accumulation_steps)
    stop_now = OnWindowBoundary(cfg.gradient_accumulation_steps)
    while state.epoch < run.batches.epochs:
        for batch in run.batches.epoch(state.epoch):
            run.progress.add(_train_batch(run, batch), len(batch.y))
            if source is not None and state.step % job.distill.version_poll_every == 0:
                source.at_step_boundary()
                state.teacher_set_version = source.teacher_set.version
            if state.step % cfg.log_every == 0:
                run.progress.flush(state, source, run.log_metrics())
            if checkpoint_now(state.step, due=state.step % cfg.checkpoint_every == 0):
                run.checkpoint({"step": state.step, "epoch": state.epoch})
                run.progress.last_checkpoint = state.step
            if stop_now(state.step, due=stop_requested(state.step)):
                run.stopped = True
                return
        state.epoch += 1
        state.next_batch = 0
        eval_start = time.perf_counter()
        metrics = run.evaluate()
        run.progress.flush(state, source, {**run.log_metrics(), **{f"eval/{k}": v for k, v in metrics.items()}})
        run.eval_s += time.perf_counter() - eval_start


def _final_metrics(run: _PhaseRun, samples_before: int) -> dict[str, Any]:
    state, source, unit = run.state, run.phase.source, _unit(run.dataset)
    faults = _faults_over_ranks({k.replace("faults/", "faults_"): v for k, v in
                                 (source.metrics() if source is not None else {}).items() if k.startswith("faults/")})
    return {**run.evaluate(), "parameters": run.parameters, "steps": state.step,
            "resumed_from_step": run.resumed_from, "steps_replayed": run.steps_replayed,
            "applied_batches": state.applied_batches,
            **_ledger(state, run.batches.planned_ids(), run.stopped), **faults,
            "train_s": run.train_s, "targets_s": run.targets_s, "peak_rss_mb": _peak_rss_mb(),
            "peak_private_mb": run.progress.peak_private_mb,
            f"{unit}_per_s": (state.samples_seen - samples_before) / max(run.train_s - run.eval_s, 1e-9),
            f"{unit}_seen": state.samples_seen,  # over the whole phase, resumed or not: a scaling-law point's D
            **merged(run.job.hooks, "final_metrics", run.phase, run.evaluate),
            **({"stopped_at_step": state.step} if run.stopped else {})}


def _peak_rss_mb() -> float:
    """This worker process's peak resident memory so far (Linux reports it in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_phase(job: StudentJob, control: RunControl, dataset: Dataset, run_progress: RunProgress, rank: int,
                 world_size: int, reference: Optional[np.ndarray] = None,
                 stream: Optional[ShardReader] = None, audit: Optional[AuditLog] = None) -> dict[str, Any]:
    """Train one student from scratch or from the checkpoint of this phase; return its final metrics."""
    run = _start_phase(job, control, dataset, run_progress, rank, world_size, reference, stream, audit)
    start, samples_before = time.perf_counter(), run.state.samples_seen
    _train_epochs(run)
    run.train_s = time.perf_counter() - start
    if run.phase.source is not None:
        run.phase.source.close()
    run.phase.step = run.state.step
    each(job.hooks, "after_training", run.phase)
    if audit is not None:
        audit.write({"kind": "end", "phase": job.phase, "rank": rank, "step": run.state.step, "stopped": run.stopped})
    final = _final_metrics(run, samples_before)
    each(job.hooks, "after_phase", run.phase)
    final.update(export_student(run.engine, job.student.zero_stage, job.export_dir, str(job.data.tokenizer), rank,
                                **merged(job.hooks, "export_options")))
    run_progress.completed[job.phase] = final
    run.progress.flush(run.state, run.phase.source, {"phase_done": True, **{f"final/{k}": v for k, v in final.items()}})
    run.checkpoint({"step": run.state.step, "phases": dict(run_progress.completed)})
    return final


def _faults_over_ranks(faults: dict[str, float]) -> dict[str, float]:
    """A phase's fault counts over every worker: events summed (each worker retries or falls
    back on its own batches), teachers lost and times the largest any worker saw."""
    if not dist.is_initialized():
        return faults
    gathered: list[Optional[dict[str, float]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, faults)
    largest = ("faults_teachers_lost", "faults_teachers_waited_for", "faults_paused_s", "faults_longest_recovery_s")
    return {name: (max if name in largest else sum)(rank.get(name, 0) for rank in gathered) for name in faults}


def _ledger(state: ClientState, planned: list[BatchId], stopped: bool) -> dict[str, int]:
    """The exactly-once counts over every rank's plan and applications, so that a batch two
    ranks both trained counts as applied twice. A stopped phase planned only what it reached."""
    if stopped:
        planned = [b for b in planned if b in state.applied_ids]
    gathered = [(planned, state.applied_ids)]
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (planned, state.applied_ids))
    applied: Counter[BatchId] = Counter()
    for _, ids in gathered:
        applied.update(ids)
    return ClientState(applied_ids=dict(applied)).ledger([b for plan, _ in gathered for b in plan])


def train_student(config: dict[str, Any]) -> None:
    """Ray Train entry point: `TorchTrainer(train_student, train_loop_config={"jobs": [...]})`;
    `"reference"` holds the teachers' test embeddings when the students are sentence encoders,
    `"streamed_test"` a streamed source's test split (`{"data": its data config as JSON,
    "split": the split}`), so that no worker reads the source's files for it."""
    import ray.train

    jobs: list[StudentJob] = config["jobs"]
    log_own_warnings()
    torch.set_num_threads(1)  # workers get a fraction of a core each on small machines
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    datasets: dict[str, Dataset] = {}  # by data config: sequence-level KD phases train on generated text

    def dataset_of(job: StudentJob) -> Dataset:
        key = job.data.model_dump_json()
        if key not in datasets:
            sent = config.get("streamed_test") or {}  # a streamed source's test split, as the driver read it
            test = sent["split"] if sent.get("data") == key else None
            datasets[key] = load_dataset(job.data, in_worker=True, test=test)
        return datasets[key]

    run_progress = read_progress() or RunProgress()
    pending = [job for job in jobs if job.phase not in run_progress.completed]
    for job in jobs:
        if job.phase in run_progress.completed:
            each(job.hooks, "on_done_before", job.control or LocalRunControl(), rank)
    # a streamed first phase starts reading now, while the worker loads its test split and builds the engine
    stream = _shard_reader(pending[0]) if pending and _streamed(pending[0]) and pending[0].train else None
    audit = open_audit_log(config.get("audit_dir"), f"applied-rank{rank}") if pending else None
    try:
        for job in pending:
            final = _train_phase(job, job.control or LocalRunControl(), dataset_of(job), run_progress, rank,
                                 world_size, config.get("reference"), stream if job is pending[0] else None, audit)
            if "stopped_at_step" in final:  # `distillery stop`: the phases after this one are left for a rerun
                break
    finally:
        if audit is not None:
            audit.close()
    if not pending:  # restarted after the last phase finished: hand back what the checkpoint holds
        ray.train.report({"phases": dict(run_progress.completed)})
