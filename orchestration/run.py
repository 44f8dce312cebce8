"""`distillery run CONFIG`: the driver of one distillation run.

Validate the config, connect to Ray, start the orchestrator, deploy the teachers, then train
the KD student and the no-KD baseline for every seed with Ray Train + DeepSpeed. A phase that
finished is recorded in `state.json` and skipped on restart; a phase cut short resumes from
its last checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rich.console import Console
from rich.text import Text

from orchestration.config import RunConfig, load_run_config
from cluster import default_cache_dir
from orchestration.precompute import offline_stores
from orchestration.report import write_report
from orchestration.results import METRICS, gain_lines, ptq_lines, retained_gain_lines, rich_table, summarize, write_results
from orchestration.continual_results import continual_rows, matrix_markdown
from orchestration.online_results import online_gain_lines, online_rows
from orchestration.phases import student_jobs
from orchestration.regimes.co_training import online_jobs
from orchestration.regimes.continual import continual_jobs
from orchestration.run_control import RayRunControl

logger = logging.getLogger(__name__)


class RunState:
    """Phases that finished, persisted atomically in `<run_dir>/state.json`."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "state.json"
        self.phases: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text())["phases"] if self.path.is_file() else {})

    def finish(self, phase: str, metrics: dict[str, Any]) -> None:
        self.phases[phase] = metrics
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"phases": self.phases}, indent=2))
        tmp.replace(self.path)


def start_orchestrator(cfg: RunConfig, run_dir: Path, ingress_token_sha256: Optional[str] = None):
    import ray

    from cluster import NAMESPACE, orchestrator_name
    from orchestration.orchestrator import Orchestrator

    name = orchestrator_name(cfg.run.name)
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass
    else:
        raise RuntimeError(f"run {cfg.run.name!r} is already running on this cluster; stop it first "
                           f"or choose another run.name")
    actor = ray.remote(Orchestrator).options(name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=32)
    return actor.remote(cfg.run.name, cfg.model_dump(), str(run_dir), default_cache_dir(), ingress_token_sha256)


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


def _teacher_test_outputs(name: str, x: np.ndarray) -> Any:
    """A served teacher's record for the test split, through its own Serve app."""
    from ray import serve

    from teachers import app_name

    request = {"batches": [{"batch_id": "eval", "inputs": x}]}
    return serve.get_app_handle(app_name(name)).remote(request).result(timeout_s=300)[0]


def _teacher_scores(cfg: RunConfig, dataset, names: list[str]) -> tuple[dict[str, float], Optional[np.ndarray]]:
    """Each teacher's headline test metric, and for encoders the reference the students are
    scored against: the teachers' test embeddings averaged with the teachers' weights."""
    from students import accuracy, embedding_agreement

    if dataset.kind == "lm":
        return {name: _teacher_perplexity(name, dataset.test.x) for name in names}, None
    records = {name: _teacher_test_outputs(name, dataset.teacher_view().test.x) for name in names}
    weights = {t.name: t.weight for t in cfg.teachers}
    if dataset.kind != "embedding":
        scores = {name: accuracy(r.logits, dataset.test.y) if r.is_dense else float((r.topk_idx[:, 0] == dataset.test.y).mean())
                  for name, r in records.items()}
        if len(records) > 1 and all(r.is_dense for r in records.values()):
            probs = sum(weights[n] * _softmax(r.logits) for n, r in records.items())
            scores[ENSEMBLE] = accuracy(probs, dataset.test.y)
        return scores, None
    reference = sum(weights[n] * r.logits for n, r in records.items()) / sum(weights[n] for n in records)
    return {n: embedding_agreement(r.logits, reference)["test_cosine"] for n, r in records.items()}, reference


def _teacher_perplexity(name: str, x: np.ndarray) -> float:
    """A served language-model teacher's held-out perplexity, through its own Serve app."""
    from ray import serve

    from teachers import app_name

    parts = serve.get_app_handle(app_name(name)).perplexity.remote(x).result(timeout_s=600)
    return float(np.exp(parts["nll"] / max(parts["tokens"], 1)))


ENSEMBLE = "ensemble of the teachers"  # not a valid teacher name, so it never clashes with one


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def train_students(jobs: list, cfg: RunConfig, run_dir: Path, reference: Optional[np.ndarray] = None,
                   trainer_name: Optional[str] = None) -> dict[str, dict[str, Any]]:
    """One Ray Train run of `train_student` over `jobs`; resumes from its last checkpoint.

    Returns the final metrics of every phase, keyed by phase name.
    """
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig as TrainRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from students import train_student

    use_gpu = cfg.student.gpus_per_worker > 0
    resources = {"CPU": cfg.student.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cfg.student.gpus_per_worker
    trainer = TorchTrainer(
        train_student,
        train_loop_config={"jobs": jobs, "reference": reference},
        scaling_config=ScalingConfig(num_workers=cfg.student.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu and torch.cuda.is_available() else "gloo"),
        run_config=TrainRunConfig(name=trainer_name or f"{cfg.run.name}-students", storage_path=str(run_dir / "train"),
                                  checkpoint_config=CheckpointConfig(num_to_keep=2),
                                  failure_config=FailureConfig(max_failures=cfg.student.max_failures)),
    )
    return trainer.fit().metrics["phases"]


def train_peers(jobs: dict[str, list], cfg: RunConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Online co-training: one Ray Train run per peer, all at once (each launched from its own
    Ray task); the first that fails stops the others."""
    import ray

    from cluster import ConfigError

    trainers = {peer: peer_jobs for peer, peer_jobs in jobs.items() if peer_jobs}
    needed = len(trainers) * cfg.student.num_workers * cfg.student.cpus_per_worker
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available:
        raise ConfigError("<cluster>", [
            f"online: {len(trainers)} peer trainers x student.num_workers {cfg.student.num_workers} x "
            f"student.cpus_per_worker {cfg.student.cpus_per_worker:g} = {needed:g} CPUs must run at once; the "
            f"cluster has {available:g}. Lower student.cpus_per_worker or num_workers, or add nodes"])
    fit = ray.remote(num_cpus=0)(train_students)
    pending = {fit.remote(peer_jobs, cfg, run_dir, None, f"{cfg.run.name}-peer-{peer}"): peer
               for peer, peer_jobs in trainers.items()}
    phases: dict[str, dict[str, Any]] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            phases.update(ray.get(done[0]))
    finally:
        for ref in pending:  # a trainer failed: its peers would wait for it until their timeout
            ray.cancel(ref, force=True)
    return phases


def run(config_path: str, *, run_name: Optional[str] = None, output_dir: Optional[str] = None,
        console: Optional[Console] = None, overrides: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Run the whole experiment in `config_path`; return the rows of its results table.

    `overrides` maps dotted field paths to values (`--set` on the command line).
    """
    console = console or Console()
    flags = {key: value for key, value in (("run.name", run_name), ("run.output_dir", output_dir)) if value is not None}
    cfg = load_run_config(config_path, {**(overrides or {}), **flags})
    run_dir = Path(cfg.run.output_dir).resolve() / cfg.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))

    from cluster import connect
    from orchestration.progress import follow
    from students import load_dataset
    from teachers import resolve_model

    console.print(f"run [bold]{cfg.run.name}[/bold] -> {run_dir}")
    dataset = load_dataset(cfg.data)
    methods = checked_terms(cfg)
    offline = cfg.distill.mode == "offline"
    stores = offline_stores(cfg, dataset.teacher_view()) if offline and cfg.teachers else {}  # a stale store fails here
    metric = {"embedding": "test_cosine", "lm": "test_perplexity"}.get(dataset.kind, "test_accuracy")
    metric_title = METRICS[metric][0]
    console.print(f"connected to {connect()}")
    state = RunState(run_dir)
    ingress_digest = ingress_token_digest(cfg)
    if not offline:
        start_serve(cfg)
    orchestrator = start_orchestrator(cfg, run_dir, ingress_digest)
    try:
        reference = None
        if offline:
            teachers = _use_stores(cfg, orchestrator, stores, console)
        else:
            teachers, reference = _deploy_teachers(cfg, orchestrator, dataset, console)
        student_model = resolve_model(cfg.student.model, in_features=dataset.in_features,
                                      num_classes=dataset.num_classes,
                                      allowed_modules=cfg.run.allowed_factory_modules)
        if cfg.online:
            planned_by_peer = _start_online(cfg, orchestrator, dataset, methods[""], state, console)
        else:
            generated = _generated_for(cfg, dataset, teachers, state, console)
            control = RayRunControl(orchestrator)
            planned_by_peer = {"": continual_jobs(cfg, methods, student_model, dataset, control) if cfg.continual
                               else student_jobs(cfg, methods, student_model, dataset.kind, control,
                                                 {name: folder for name, (folder, _) in stores.items()}, generated)}
        by_peer = {peer: [job for job in planned if job.phase not in state.phases]
                   for peer, planned in planned_by_peer.items()}
        jobs = [job for planned in by_peer.values() for job in planned]
        for phase, metrics in state.phases.items():
            console.print(Text(f"{phase}: done earlier, {metric_title} {metrics[metric]:.4f}"))
        if jobs:
            trainers = f"{len(by_peer)} trainers of " if cfg.online else ""
            console.print(f"students: {', '.join(job.phase for job in jobs)} on {trainers}{cfg.student.num_workers} "
                          f"Ray Train workers, DeepSpeed ZeRO-{cfg.student.zero_stage}")
            phases = follow(orchestrator, (lambda: train_peers(by_peer, cfg, run_dir)) if cfg.online else
                            (lambda: train_students(jobs, cfg, run_dir, reference)), console)
            for phase, metrics in phases.items():
                resumed = f", resumed from step {metrics['resumed_from_step']}" if metrics["resumed_from_step"] else ""
                if "stopped_at_step" in metrics:
                    resumed += f", stopped early (distillery stop) at step {metrics['stopped_at_step']}"
                console.print(Text(f"{phase}: {metric_title} {metrics[metric]:.4f} after {metrics['steps']} "
                                   f"steps in {metrics['train_s']:.1f}s{resumed}"))
                state.finish(phase, metrics)
        extra = ""
        if cfg.continual:
            rows = continual_rows(state.phases, cfg.continual.column, cfg.continual.tasks)
            extra = matrix_markdown(rows, cfg.continual.column, cfg.continual.tasks)
        elif cfg.online:
            rows = online_rows(state.phases, [p.name for p in cfg.online.peers], cfg.run.seeds)
            extra = "".join(f"{line}.\n" for line in online_gain_lines(rows))
        else:
            rows = summarize(teachers, state.phases)
            extra = "".join(f"{line}.\n" for line in retained_gain_lines(rows, *dense_reference(cfg))
                            + ptq_lines(state.phases, rows[-1]["metric"] if rows else "test_accuracy"))
        title = f"Distillery run {cfg.run.name}: {cfg.data.dataset}"
        write_results(run_dir, rows, title, extra)
        console.print(rich_table(rows, title))
        if extra:
            console.print(extra, highlight=False)
        for line in gain_lines(rows):
            console.print(line)
        console.print(f"results: {run_dir / 'results.md'}; metrics: {run_dir / 'metrics.jsonl'}; "
                      f"report with plots: {write_report(run_dir)}")
        return rows
    finally:
        _shutdown(orchestrator)


def generate_only(config_path: str, console: Console, overrides: Optional[dict[str, Any]] = None) -> Path:
    """`distillery generate`: deploy the config's teachers, write the generated dataset, shut down."""
    from cluster import connect
    from cluster import ConfigError
    from orchestration.generate import generate
    from students import load_dataset

    cfg = load_run_config(config_path, overrides)
    if cfg.data.dataset != "stdlib_functions" or not cfg.teachers:
        raise ConfigError(config_path, [f"data.dataset: generate needs language-model teachers on stdlib_functions "
                                        f"(got {cfg.data.dataset}, {len(cfg.teachers)} teachers)"])
    dataset = load_dataset(cfg.data)
    console.print(f"connected to {connect()}")
    start_serve(cfg)
    orchestrator = start_orchestrator(cfg, Path(cfg.run.output_dir).resolve() / cfg.run.name)
    try:
        teachers, _ = _deploy_teachers(cfg, orchestrator, dataset, console)
        return generate(cfg, dataset, {name: info["model_version"] for name, info in teachers.items()}, console)
    finally:
        _shutdown(orchestrator)


def _generated_for(cfg: RunConfig, dataset, teachers: dict[str, dict[str, Any]], state: RunState,
                   console: Console) -> Optional[str]:
    """Sequence-level KD: the teachers' completions the `train_data: generated` methods fine-tune
    on, written now unless they are current (or every such phase is already done)."""
    from orchestration.generate import generate
    from orchestration.phases import phase_names

    methods = cfg.distill.methods or {}
    wanted = [phase for phase, _, method in phase_names(cfg)
              if method in methods and methods[method].train_data == "generated"]
    if not wanted or all(phase in state.phases for phase in wanted):
        return None
    versions = {name: info["model_version"] for name, info in teachers.items() if "model_version" in info}
    return str(generate(cfg, dataset, versions, console))


def dense_reference(cfg: RunConfig) -> tuple[str, list[str]]:
    """(the first KD method with dense soft targets, the top-k methods with the same terms): how
    much of dense KD's gain top-k keeps. ("", []) when the run has no such pair."""
    methods = cfg.distill.methods or {}
    dense = next((name for name, m in methods.items() if m.dense and not m.quantize), "")
    if not dense:
        return "", []
    return dense, [name for name, m in methods.items() if m.top_k is not None and m.terms == methods[dense].terms]


def _start_online(cfg: RunConfig, orchestrator, dataset, terms: list, state: RunState,
                  console: Console) -> dict[str, list]:
    """Serve every peer that teaches another as a live teacher, and plan each peer's phases; rounds
    that finished before a restart are announced, so that peers do not wait for them."""
    import ray

    from orchestration.regimes.co_training import CoTraining
    from teachers import resolve_model

    online = cfg.online
    specs = {p.name: (p.model or cfg.student.model) for p in online.peers}
    taught = sorted({t for p in online.peers for t in online.teachers_of(p.name)})
    console.print(f"peers: serving {', '.join(taught)} as live teachers (weights refreshed every "
                  f"{online.refresh_every} steps, staleness at most {online.max_staleness} steps)")
    ray.get(orchestrator.start_peers.remote(list(specs), [{"name": name, "model": specs[name].model_dump()}
                                                          for name in taught]))
    models = {name: resolve_model(spec, in_features=dataset.in_features, num_classes=dataset.num_classes,
                                  allowed_modules=cfg.run.allowed_factory_modules) for name, spec in specs.items()}
    planned = online_jobs(cfg, terms, models, RayRunControl(orchestrator))
    ray.get([orchestrator.finish_round.remote(job.hook(CoTraining).role.peer, job.hook(CoTraining).role.round)
             for jobs in planned.values() for job in jobs if job.hook(CoTraining) and job.phase in state.phases])
    return planned


def _deploy_teachers(cfg: RunConfig, orchestrator, dataset,
                     console: Console) -> tuple[dict[str, dict[str, Any]], Optional[np.ndarray]]:
    """Deploy the config's teachers; return their result rows and, for encoders, the reference embeddings."""
    import ray

    if not cfg.teachers:
        return {}, None
    console.print(f"teachers: training or loading {', '.join(t.name for t in cfg.teachers)}")
    infos = ray.get(orchestrator.add_teachers.remote([t.model_dump() for t in cfg.teachers]))
    scores, reference = _teacher_scores(cfg, dataset, [info["name"] for info in infos])
    title = METRICS["test_cosine" if reference is not None else "test_perplexity" if dataset.kind == "lm"
                    else "test_accuracy"][0]
    teachers = {}
    for info in infos:
        name = info["name"]
        teachers[name] = {"score": scores[name], "parameters": info["parameters"],
                          "train_seconds": info["train_seconds"], "cached": info["cached"],
                          "pretrained": info["pretrained"], "model_version": info["model_version"]}
        source = "pretrained" if info["pretrained"] else "cached" if info["cached"] else "trained"
        console.print(f"teacher {name}: deployed as teacher-{name}, version {info['model_version']}, "
                      f"{title} {scores[name]:.4f} ({source})")
    if ENSEMBLE in scores:
        teachers[ENSEMBLE] = {"score": scores[ENSEMBLE], "parameters": sum(t["parameters"] for t in teachers.values()),
                              "train_seconds": sum(t["train_seconds"] for t in teachers.values()),
                              "note": "weighted mean of the teachers' probabilities", "ensemble": True}
        console.print(f"{ENSEMBLE}: {title} {scores[ENSEMBLE]:.4f}")
    return teachers, reference


def checked_terms(cfg: RunConfig) -> dict[str, list]:
    """The terms of every KD method of the run, checked against the registry and the teachers."""
    from cluster import ConfigError
    from students import check_terms, feature_refs, method_terms, self_distillation_exits

    methods = method_terms(cfg.distill)
    for method, terms in methods.items():
        where = f"distill.methods.{method}" if method else "distill.terms"
        try:
            check_terms(terms, where)
            _, teacher_layers = feature_refs(terms)
            self_distillation_exits(terms)
        except ValueError as exc:
            raise ConfigError(where, [str(exc)]) from None
        unknown = sorted(set(teacher_layers) - {t.name for t in cfg.teachers})
        if unknown:
            raise ConfigError(where, [f"features of teachers {unknown} are asked for, but the run's teachers "
                                      f"are {[t.name for t in cfg.teachers]}"])
    return methods


def _use_stores(cfg: RunConfig, orchestrator, stores: dict, console: Console) -> dict[str, dict[str, Any]]:
    """Offline mode: register each teacher's store as its entry in the teacher set."""
    import ray

    from teachers import TeacherEntry

    weights = {t.name: t.weight for t in cfg.teachers}
    entries = [TeacherEntry(name, weights[name], m.output_space, m.num_classes, m.key.teacher_version)
               for name, (_, m) in stores.items()]
    ray.get(orchestrator.use_stored_teachers.remote(entries))
    teachers = {}
    for name, (folder, manifest) in stores.items():
        console.print(f"teacher {name}: offline store {folder} ({manifest.rows} rows, top-{manifest.key.top_k}, "
                      f"T={manifest.key.temperature:g}, version {manifest.key.teacher_version})", highlight=False)
        teachers[name] = {"score": manifest.teacher_test_score, "parameters": 0,
                          "train_seconds": 0.0, "cached": True}
    return teachers


def _shutdown(orchestrator) -> None:
    import ray

    try:
        ray.get(orchestrator.close.remote(), timeout=60)
    except Exception as exc:  # noqa: BLE001 - best effort; the actor dies with the driver anyway
        logger.warning("orchestrator close failed: %s", exc)
    ray.kill(orchestrator)
