"""The per-worker training loop (runs inside a Ray Train worker).

One worker group trains every phase of a run in order (the KD student and the no-KD
baseline for each seed), so the cost of starting workers and DeepSpeed is paid once.
Each phase reads top to bottom: get batch, get soft targets, compute loss, step, log,
checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist

from students.checkpoint import ClientState, RunProgress, read_progress, restore, save_and_report
from students.data import Dataset, Split, load_dataset, plan_epoch, student_subset
from students.evaluation import accuracy, embedding_agreement
from students.export import export_student, quantization_target
from students.quantize import fake_quantize_model, post_training_quantized
from students.deepspeed_config import deepspeed_config
from students.job import StudentJob
from students.losses import CompositeLoss, feature_refs, self_distillation_exits
from students.generator import SyntheticInputs, SyntheticStream, frozen_forward
from students.online import TargetLag, WeightPublisher
from students.replay import MemoryTargets
from students.speculative import SpeculativeBatches
from students.student_module import DistillationStudent
from teachers.zoo import count_parameters


def _import_deepspeed():
    # DeepSpeed picks its accelerator at import time; without CUDA it must be told "cpu".
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed


def _student_module(job: StudentJob, in_features: int) -> DistillationStudent:
    """The student with the hooks, FitNets projectors and self-distillation exits its terms need."""
    layers, _ = feature_refs(job.terms)
    hints = [t for t in job.terms if t.name == "fitnet"]
    projections, matched = [], []
    if hints:
        import ray

        teachers = ray.get(job.orchestrator.teacher_set.remote()).teachers
        for term in hints:
            teacher, _, layer = term.params["teacher"].partition("/")
            shapes = teachers[teacher].feature_shapes if teacher in teachers else {}
            if layer not in shapes:
                raise ValueError(f"fitnet: teacher {teacher!r} sends no feature {layer!r} (it sends {sorted(shapes)})")
            hint = (term.params["student"], term.params["teacher"], shapes[layer])
            (projections if term.params.get("projector", True) else matched).append(hint)
    exits, exit_hints = self_distillation_exits(job.terms)
    return DistillationStudent(job.model.build(), layers, projections, in_features, exits, exit_hints, matched,
                               job.weighting.gate_teachers, job.weighting.gate_hidden)


def task_rows(train: Split, train_on: tuple[str, tuple[int, ...]],
              replay: Optional[tuple[str, tuple[int, ...], int]]) -> np.ndarray:
    """The rows of a continual phase: its task's samples and, with replay, the first samples of
    each earlier task (the same ones for every later task: the memory)."""
    column, values = train_on
    rows = np.flatnonzero(np.isin(train.columns[column], values))
    if replay:
        column, earlier, samples = replay
        memory = [np.flatnonzero(train.columns[column] == value)[:samples] for value in earlier]
        rows = np.sort(np.concatenate([rows, *memory]))
    return rows


def _build_engine(job: StudentJob, world_size: int, in_features: int):
    deepspeed = _import_deepspeed()
    torch.manual_seed(job.init_seed if job.init_seed is not None else job.seed)  # the same weights on every rank
    module = _student_module(job, in_features)
    if job.init_from:  # a continual run's next task starts from the student of the task before
        import ray

        module.model.load_state_dict(ray.get(job.orchestrator.snapshot_weights.remote(job.init_from)))
    if job.quantize_bits:  # quantization-aware: the student computes with rounded weights from the first step
        fake_quantize_model(quantization_target(module.model), job.quantize_bits)
    parameters = count_parameters(module.model)  # before ZeRO-3 partitions them away
    engine, *_ = deepspeed.initialize(model=module, model_parameters=module.parameters(),
                                      config=deepspeed_config(job.student, world_size))
    return engine, parameters


def _evaluate(engine, job: StudentJob, dataset: Dataset, rank: int, world_size: int,
              reference: Optional[np.ndarray], model: Optional[torch.nn.Module] = None) -> dict[str, float]:
    """Test metrics over the whole test split; every rank runs a slice (ZeRO-3 safe) and the
    slices' outputs are gathered. `reference`: the teachers' test embeddings (encoders).
    `model`: score this module (e.g. a post-training-quantized copy) instead of the engine's."""
    test = dataset.test
    idx = np.array_split(np.arange(len(test.y)), world_size)[rank]
    forward = engine if model is None else model
    if dataset.kind == "lm":
        metrics = _perplexity(forward, engine, test, idx, job.student.precision, world_size)
        if model is None:
            engine.train()
        return metrics
    forward.eval()
    with torch.no_grad(), mixed_precision(engine, job.student.precision):
        out = forward(torch.from_numpy(test.x[idx]).to(engine.device)).float().cpu().numpy()
    if model is None:
        engine.train()
    parts = [out]
    if dist.is_initialized():
        parts = [None] * world_size
        dist.all_gather_object(parts, out)
    outputs = np.concatenate(parts)
    if dataset.kind == "embedding":
        if reference is None:
            raise ValueError(f"dataset {dataset.name!r}: scoring a sentence encoder needs the teachers' test "
                             f"embeddings; the run has no teacher")
        return embedding_agreement(outputs, reference)
    metrics = {"test_accuracy": accuracy(outputs, test.y)}
    if job.eval_by:  # per task: over all classes, and over the task's own classes (the task given)
        column, values = job.eval_by
        for value in values:
            rows = test.columns[column] == value
            own = np.full(outputs.shape[1], -np.inf)
            own[np.unique(test.y[rows])] = 0.0
            metrics[f"test_accuracy/{column}{value}"] = accuracy(outputs[rows], test.y[rows])
            metrics[f"task_given_accuracy/{column}{value}"] = accuracy(outputs[rows] + own, test.y[rows])
    return metrics


def _perplexity(forward, engine, test: Split, idx: np.ndarray, precision: str, world_size: int,
                chunk: int = 64) -> dict[str, float]:
    """Held-out perplexity of a causal LM student over the target tokens of the whole test split
    (each rank scores its slice in chunks of sequences; the sums are all-reduced). Every rank
    runs the same number of forwards: under ZeRO-3 each forward gathers parameters from all."""
    forward.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=engine.device)  # summed NLL, tokens
    forwards = max(1, -(-len(test.y) // (world_size * chunk)))
    with torch.no_grad(), mixed_precision(engine, precision):
        for rows in np.array_split(idx, forwards):
            logits = forward(torch.from_numpy(test.x[rows]).to(engine.device)).float()
            labels = torch.from_numpy(test.labels(rows)).to(engine.device)
            sums[0] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").double()
            sums[1] += len(labels)
    if dist.is_initialized():
        dist.all_reduce(sums)
    nll = float(sums[0] / sums[1].clamp(min=1))
    return {"test_perplexity": float(np.exp(nll)), "test_nll": nll, "test_tokens": int(sums[1])}


def mixed_precision(engine, precision: str):
    """bf16/fp16 students: autocast casts float32 inputs and teacher targets for the module's
    matmuls and keeps losses and reductions in float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=engine.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _train_step(engine, loss_fn: CompositeLoss, batch, targets, precision: str,
                synthetic: Optional[SyntheticStream] = None) -> dict[str, torch.Tensor]:
    """Forward, loss, backward and optimizer step (DeepSpeed handles accumulation and ZeRO);
    with a generator, the student also learns on its answered synthetic batch, then the
    generator and the discriminator take their steps."""
    x, y = torch.from_numpy(batch.x).to(engine.device), torch.from_numpy(batch.y).to(engine.device)
    with mixed_precision(engine, precision):
        logits = engine(x)
        terms = loss_fn(logits, y, targets, engine.module.features(), engine.module.projectors,
                        engine.module.gate_logits(), batch.columns)
        if synthetic is not None:  # a second forward, after the terms read the real batch's features
            extra = synthetic.loss(engine, engine.device)
            if extra:
                terms["synthetic_kd"] = extra["synthetic_kd"]
                terms["total"] = terms["total"] + extra["weighted"]
    engine.backward(terms["total"])
    engine.step()
    loss_fn.step_discriminator(terms)
    if synthetic is not None:
        with mixed_precision(engine, precision):
            terms.update(synthetic.step_generator(frozen_forward(engine.module.model)))
    return terms


def _make_source(job: StudentJob, output_space: str, samples: int, planned: Callable[[], Iterable]):
    """The soft-target source of the job; `planned()` lists every batch left to train."""
    if not job.use_teachers:
        return None
    import ray

    if job.source == "offline":
        from teachers.store import StoredTeachers

        teacher_set = ray.get(job.orchestrator.teacher_set.remote())
        return StoredTeachers(job.stores, teacher_set, samples=samples, output_space=output_space,
                              temperature=job.distill.temperature)
    if job.source == "served":
        from teachers.client import FaultPolicy, TeacherClient
        from teachers.teacher_set import snapshot_teacher_name

        only = {snapshot_teacher_name(job.teacher_snapshot)} if job.teacher_snapshot else job.teachers and set(job.teachers)
        return TeacherClient(job.orchestrator, output_space=output_space, temperature=job.distill.temperature,
                             prefetch=job.distill.prefetch, batches_per_request=job.distill.batches_per_request,
                             timeout_s=job.distill.request_timeout_s, top_k=job.distill.top_k,
                             dense_max_classes=job.distill.dense_max_classes, only=only,
                             policy=FaultPolicy.of(job.distill))
    from teachers.local import LocalTeachers

    apps, teacher_set = ray.get([job.orchestrator.teacher_apps.remote(), job.orchestrator.teacher_set.remote()])
    local = LocalTeachers(apps, teacher_set, output_space=output_space, temperature=job.distill.temperature)
    if job.source == "precomputed":
        local.precompute(planned())
    return local


def _speculative_batches(job: StudentJob, engine, client, rank: int) -> Optional[SpeculativeBatches]:
    """Speculative KD: the student (its module, outside DeepSpeed's forward) proposes, the
    teacher named in the config scores through `client`."""
    spec = job.speculative
    if spec is None:
        return None
    if client is None or not hasattr(client, "score_proposals"):
        raise ValueError(f"phase {job.phase}: speculative KD needs served teachers (distill.mode online)")

    def verify(sequences: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        answer = client.score_proposals(sequences.numpy(), start.numpy(), top_k=spec.top_k,
                                        temperature=spec.temperature, seed=int(sequences.sum()) + rank,
                                        teacher=spec.teacher)
        return torch.as_tensor(answer["first_rejected"]), torch.as_tensor(answer["replacement"])

    return SpeculativeBatches(engine.module.model, verify, top_k=spec.top_k, max_rounds=spec.max_rounds,
                              temperature=spec.temperature, seed=job.seed, rank=rank)


def _serve_snapshot(job: StudentJob, rank: int) -> None:
    """Born-again: rank 0 has the orchestrator serve the earlier phase's student; all ranks wait for it."""
    if rank == 0:
        import ray

        ray.get(job.orchestrator.serve_snapshot.remote(job.teacher_snapshot))
    if dist.is_initialized():
        dist.barrier()


def _memory_targets(job: StudentJob) -> Optional[MemoryTargets]:
    """The stored targets of the earlier tasks' memories (continual replay_targets: stored)."""
    if not job.memory_from:
        return None
    import ray

    folders = ray.get([job.orchestrator.memory_store.remote(phase) for phase in job.memory_from])
    return MemoryTargets(folders, job.distill.temperature)


def _hand_over_snapshots(job: StudentJob, engine, rank: int) -> None:
    """At the end of a phase (every rank's teacher client is closed): rank 0 exports this
    student for a later born-again phase and retires the snapshot this phase learned from."""
    if rank != 0:
        return
    import ray

    if job.export_snapshot:
        weights = {k: v.detach().cpu().contiguous() for k, v in engine.module.model.state_dict().items()}
        ray.get(job.orchestrator.save_snapshot.remote(job.phase, weights))
        if job.store_memory:
            column, (task,) = job.train_on
            ray.get(job.orchestrator.store_memory_targets.remote(job.phase, column, task, job.store_memory))
    if job.teacher_snapshot:
        ray.get(job.orchestrator.drop_snapshot.remote(job.teacher_snapshot))


def _start_online(job: StudentJob, engine, step: int, rank: int) -> Optional[WeightPublisher]:
    """Online co-training: rank 0 publishes the first weights of the round and waits for the
    peers; every rank waits for rank 0."""
    if job.online is None:
        return None
    publisher = WeightPublisher(job.online, job.orchestrator, rank)
    publisher.start(engine.module.model, step)
    if dist.is_initialized():
        dist.barrier()
    return publisher


def _online_metrics(publisher: Optional[WeightPublisher], lag: TargetLag) -> dict[str, Any]:
    return {**publisher.metrics(), **lag.metrics()} if publisher is not None else {}


def _extra_state(loss_fn: CompositeLoss, synthetic: Optional[SyntheticStream]) -> dict[str, Any]:
    """Training state outside the DeepSpeed engine: the discriminator's and the generator's."""
    state = {"adversary": loss_fn.adversary.state_dict()} if loss_fn.adversary is not None else {}
    if synthetic is not None:
        state["generator"] = synthetic.inputs.state_dict()
    return state


def _synthetic_stream(job: StudentJob, client, train: Split, device, rank: int,
                      extra_state: dict[str, Any]) -> Optional[SyntheticStream]:
    """The generator of the job, restored from the checkpoint when resuming (None without one)."""
    if job.generator is None or client is None:
        return None
    cfg = job.generator
    inputs = SyntheticInputs(train.x.min(0), train.x.max(0), samples=cfg.samples, z_dim=cfg.z_dim, hidden=cfg.hidden,
                             lr=cfg.lr, device=device, seed=job.seed, rank=rank)
    if "generator" in extra_state:
        inputs.load_state_dict(extra_state["generator"])
    return SyntheticStream(inputs, client, job.distill.temperature, cfg.weight, f"{job.phase}-r{rank}")


class _StopCheck:
    """Whether the run was asked to stop (`distillery stop`), the same answer on every rank: every
    `every` steps each rank reads the answer to its last non-blocking poll of the orchestrator
    and sends the next, and the ranks all-reduce what they saw, so that all of them leave the
    loop after the same step (one poll per rank per `every` steps)."""

    def __init__(self, orchestrator: Any, every: int, device: torch.device):
        self.orchestrator, self.every, self.device = orchestrator, every, device
        self._ref = None
        self._seen = False

    def __call__(self, step: int) -> bool:
        if self.orchestrator is None:
            return False
        import ray

        if step % self.every:
            return False
        if not self._seen and self._ref is not None and ray.wait([self._ref], timeout=0)[0]:
            self._seen, self._ref = bool(ray.get(self._ref)), None
        if not self._seen and self._ref is None:
            self._ref = self.orchestrator.stop_requested.remote()
        flag = torch.tensor([float(self._seen)], device=self.device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class _Progress:
    """Rolling throughput, loss and teacher-weight averages, pushed to the orchestrator as
    metric records (`loss/<term>`; `teacher/<name>/effective_weight`: the teacher's mean
    per-sample weight in the merged target over the steps it answered; keys that already name
    a group, like `replay/stored_targets`, as they are)."""

    def __init__(self, job: StudentJob, rank: int, world_size: int):
        self.job, self.rank, self.world_size = job, rank, world_size
        self.window_start, self.window_samples = time.perf_counter(), 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.count = 0
        self.last_checkpoint: Optional[int] = None

    def add(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        for key, value in terms.items():
            weight_of = key.removeprefix("teacher_weight/")
            key = (f"teacher/{weight_of}/effective_weight" if weight_of != key else key if "/" in key
                   else f"loss/{key}")
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1
        self.window_samples += batch_size * self.world_size

    def flush(self, state: ClientState, client, extra: Optional[dict[str, Any]] = None) -> None:
        now = time.perf_counter()
        record: dict[str, Any] = {"phase": self.job.phase, "rank": self.rank, "step": state.step,
                                  "epoch": state.epoch}
        if self.job.trainer:
            record["trainer"] = self.job.trainer
        if self.count:
            unit = "tokens" if self.job.data.dataset == "stdlib_functions" else "samples"  # LM rows are tokens
            record[f"throughput/{unit}_per_s"] = self.window_samples / max(now - self.window_start, 1e-9)
            record.update({k: v / self.counts[k] for k, v in self.sums.items()})
        if client is not None:
            ts = client.teacher_set
            record["teacher_set/version"] = ts.version
            record["teachers"] = sorted(ts.teachers)
            record.update({f"teacher/{n}/weight": w for n, w in ts.weights().items()})
            record.update({f"teacher/{n}/wait_ms": ms for n, ms in client.wait_ms.items()})
            record.update({f"teacher/{n}/latency_ms": ms for n, ms in getattr(client, "latency_ms", {}).items()})
            if hasattr(client, "in_flight"):
                record.update({f"teacher/{n}/in_flight": count for n, count in client.in_flight().items()})
            record.update({f"faults/{k}": v for k, v in getattr(client, "faults", {}).items()})
        if self.last_checkpoint is not None:
            record["checkpoint/last_step"] = self.last_checkpoint
        record.update(extra or {})
        if self.job.orchestrator is not None:
            self.job.orchestrator.record_progress.remote(record)
        self.window_start, self.window_samples, self.sums, self.counts, self.count = now, 0, {}, {}, 0


def _train_phase(job: StudentJob, dataset: Dataset, run_progress: RunProgress, rank: int,
                 world_size: int, reference: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Train one student from scratch or from the checkpoint of this phase; return its final metrics."""
    cfg = job.student
    epochs = cfg.epochs if job.train else 0
    train = student_subset(dataset.train, job.data.student_train_samples)
    if job.train_on:  # `row` keeps each sample's row of the training split (the key of stored memory targets)
        train = replace(train, columns={**train.columns, "row": np.arange(len(train.y))})
        train = train.rows(task_rows(train, job.train_on, job.replay))
    if epochs and len(train.y) < world_size * cfg.micro_batch_size:
        raise ValueError(f"phase {job.phase}: {len(train.y)} training samples make no batch of "
                         f"student.micro_batch_size {cfg.micro_batch_size} on each of {world_size} workers; "
                         f"raise data.student_train_samples or lower the batch size")
    engine, n_params = _build_engine(job, world_size, dataset.in_features)
    state, extra_state = restore(engine) if run_progress.phase == job.phase else (ClientState(phase=job.phase), {})
    run_progress.phase = job.phase
    resumed_from = state.step
    steps_replayed = _announce_resume(job, state.step, rank) if resumed_from else 0

    first_epoch, first_batch = state.epoch, state.next_batch

    def epoch_plan(epoch: int) -> list:
        batches = plan_epoch(train, epoch=epoch, seed=job.seed, shard=rank, num_shards=world_size,
                             batch_size=cfg.micro_batch_size)
        return batches[first_batch:] if epoch == first_epoch else batches

    def remaining_batches():
        return (batch for epoch in range(first_epoch, epochs) for batch in epoch_plan(epoch))

    if job.teacher_snapshot:
        _serve_snapshot(job, rank)
    publisher = _start_online(job, engine, state.step, rank)
    lag = TargetLag()
    client = _make_source(job, dataset.output_space, len(train.y), remaining_batches)
    if client is not None and job.speculative is None:  # speculative batches are made (and asked for) one by one
        client.plan(remaining_batches())
    speculate = _speculative_batches(job, engine, client, rank)
    loss_fn = CompositeLoss(job.terms, job.distill.temperature, job.weighting, dataset.num_classes, engine.device,
                            seed=job.seed)  # an adversarial discriminator starts alike on every rank
    if loss_fn.adversary is not None and "adversary" in extra_state:
        loss_fn.adversary.load_state_dict(extra_state["adversary"])
    synthetic = _synthetic_stream(job, client, train, engine.device, rank, extra_state)
    progress = _Progress(job, rank, world_size)
    progress.last_checkpoint = resumed_from or None
    memory = _memory_targets(job)
    start = time.perf_counter()
    eval_s = 0.0  # evaluation time, left out of the training throughput
    targets_s = 0.0  # time the loop spent getting soft targets
    samples_before = state.samples_seen

    stop_requested = _StopCheck(job.orchestrator, cfg.log_every, engine.device)
    stopped = False
    while state.epoch < epochs and not stopped:
        for batch in epoch_plan(state.epoch):
            planned_id = batch.batch_id  # a speculative batch keeps the id of the batch it extends
            wait_start = time.perf_counter()
            if speculate is not None:
                batch = speculate(batch, state.step)
            targets = client.targets_for(batch) if client is not None else None
            replayed = None
            if memory is not None:
                targets, replayed = memory.patch(targets, batch.columns["row"])
            targets_s += time.perf_counter() - wait_start
            terms = _train_step(engine, loss_fn, batch, targets, cfg.precision, synthetic)
            if replayed is not None:
                terms["replay/stored_targets"] = torch.tensor(float(replayed))
            if synthetic is not None:
                synthetic.request(state.step + 1)  # answered while the next real batch trains
            state.applied(planned_id, batch.index, len(batch.y) * world_size)
            progress.add(terms, len(batch.y))
            if publisher is not None:
                lag.observe(targets, state.step)
                publisher.after_step(engine.module.model, state.step)
            if client is not None and state.step % job.distill.version_poll_every == 0:
                client.at_step_boundary()
                state.teacher_set_version = client.teacher_set.version
            if state.step % cfg.log_every == 0:
                progress.flush(state, client, {**_online_metrics(publisher, lag),
                                               **(speculate.metrics() if speculate is not None else {})})
            if state.step % cfg.checkpoint_every == 0:
                save_and_report(engine, state, run_progress, {"step": state.step, "epoch": state.epoch},
                                _extra_state(loss_fn, synthetic))
                progress.last_checkpoint = state.step
            if stop_requested(state.step):
                stopped = True
                break
        if stopped:
            break
        state.epoch += 1
        state.next_batch = 0
        eval_start = time.perf_counter()
        metrics = _evaluate(engine, job, dataset, rank, world_size, reference)
        progress.flush(state, client, {**_online_metrics(publisher, lag), **{f"eval/{k}": v for k, v in metrics.items()}})
        eval_s += time.perf_counter() - eval_start

    train_s = time.perf_counter() - start
    if client is not None:
        client.close()
    if publisher is not None:
        publisher.finish(engine.module.model, state.step)
    unit = "tokens" if dataset.kind == "lm" else "samples"  # a language model's rows are its target tokens
    final = {**_evaluate(engine, job, dataset, rank, world_size, reference), **_ptq_metrics(engine, job, dataset, rank,
                                                                                        world_size, reference),
             "parameters": n_params,
             "steps": state.step, "resumed_from_step": resumed_from, "steps_replayed": steps_replayed,
             "applied_batches": state.applied_batches,
             **_ledger(state, [b.batch_id for e in range(epochs) for b in plan_epoch(
                 train, epoch=e, seed=job.seed, shard=rank, num_shards=world_size, batch_size=cfg.micro_batch_size)],
                 stopped, engine.device),
             **({f"faults_{k}": v for k, v in client.faults.items()} if hasattr(client, "faults") else {}),
             "train_s": train_s, "targets_s": targets_s,
             f"{unit}_per_s": (state.samples_seen - samples_before) / max(train_s - eval_s, 1e-9),
             f"{unit}_seen": state.samples_seen,  # over the whole phase, resumed or not: a scaling-law point's D
             **(publisher.summary() if publisher is not None else {}),
             **({k.replace("/", "_"): v for k, v in speculate.metrics().items()} if speculate is not None else {}),
             **({"stopped_at_step": state.step} if stopped else {})}
    _hand_over_snapshots(job, engine, rank)
    final.update(export_student(engine, cfg.zero_stage, job.export_dir, str(job.data.tokenizer), rank,
                                job.quantize_bits))
    run_progress.completed[job.phase] = final
    progress.flush(state, client, {"phase_done": True, **{f"final/{k}": v for k, v in final.items()}})
    save_and_report(engine, state, run_progress, {"step": state.step, "phases": dict(run_progress.completed)},
                    _extra_state(loss_fn, synthetic))
    return final


def _announce_resume(job: StudentJob, step: int, rank: int) -> int:
    """Tell the orchestrator the phase resumed at `step`; return the steps trained again."""
    if job.orchestrator is None:
        return 0
    import ray

    return int(ray.get(job.orchestrator.resumed.remote(job.phase, step, job.trainer))) if rank == 0 else 0


def _ledger(state: ClientState, planned: list[str], stopped: bool, device: torch.device) -> dict[str, int]:
    """The exactly-once counts summed over the ranks. A stopped phase planned only what it reached."""
    if stopped:
        planned = [b for b in planned if b in state.applied_ids]
    counts = state.ledger(planned)
    totals = torch.tensor(list(counts.values()), dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(totals)
    return {key: int(value) for key, value in zip(counts, totals.tolist())}


def _ptq_metrics(engine, job: StudentJob, dataset: Dataset, rank: int, world_size: int,
                 reference: Optional[np.ndarray]) -> dict[str, float]:
    """Post-training quantization, the baseline of quantized distillation: this (full-precision)
    student's test metrics with its linear weights rounded to each of `job.ptq_bits`."""
    metrics = {}
    for bits in job.ptq_bits:  # never under ZeRO-3 (the config refuses quantized methods there)
        copy = post_training_quantized(engine.module.model, bits, quantization_target)
        scores = _evaluate(engine, job, dataset, rank, world_size, reference, model=copy)
        metrics.update({f"{key}_ptq_int{bits}": value for key, value in scores.items() if key.startswith("test_")})
    return metrics


def _announce_finished_rounds(done: list[StudentJob], rank: int) -> None:
    """A resumed peer trainer tells the (new) orchestrator which rounds it finished before, so
    that peers still in those rounds are not taught by its next round's weights."""
    if rank != 0:
        return
    import ray

    ray.get([job.orchestrator.finish_round.remote(job.online.peer, job.online.round) for job in done if job.online])


def train_student(config: dict[str, Any]) -> None:
    """Ray Train entry point: `TorchTrainer(train_student, train_loop_config={"jobs": [...]})`;
    `"reference"` holds the teachers' test embeddings when the students are sentence encoders."""
    import ray.train

    jobs: list[StudentJob] = config["jobs"]
    torch.set_num_threads(1)  # workers get a fraction of a core each on small machines
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    datasets: dict[str, Dataset] = {}  # by data config: sequence-level KD phases train on generated text

    def dataset_of(job: StudentJob) -> Dataset:
        key = job.data.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(job.data)
        return datasets[key]

    run_progress = read_progress() or RunProgress()
    pending = [job for job in jobs if job.phase not in run_progress.completed]
    _announce_finished_rounds([job for job in jobs if job.phase in run_progress.completed], rank)
    for job in pending:
        final = _train_phase(job, dataset_of(job), run_progress, rank, world_size, config.get("reference"))
        if "stopped_at_step" in final:  # `distillery stop`: the phases after this one are left for a rerun
            break
    if not pending:  # restarted after the last phase finished: hand back what the checkpoint holds
        ray.train.report({"phases": dict(run_progress.completed)})
