"""`distillery run CONFIG`: the driver of one distillation run.

Validate the config, connect to Ray, start the orchestrator, deploy the teachers, then train
the KD student and the no-KD baseline for every seed with Ray Train + DeepSpeed. A phase that
finished is recorded in `state.json` and skipped on restart; a phase cut short resumes from
its last checkpoint.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rich.console import Console
from rich.text import Text

from cluster import AUDIT_FOLDER, ConfigError, RunFolder

from orchestration.check import data_progress
from orchestration.config import RunConfig, load_run_config, run_folder
from orchestration.export import REFERENCE_FILE
from orchestration.phases import PLAIN
from orchestration.precompute import offline_stores
from orchestration.quiet_output import LOG_FILE, quiet_output
from orchestration.ray_run_control import RayRunControl
from orchestration.regime import RunContext, RunRegime
from orchestration.regimes import co_training, continual
from orchestration.report import write_report
from orchestration.results import METRICS, gain_lines, rich_table, write_results
from orchestration.run_teachers import deploy_teachers, use_stores
from orchestration.services import ingress_token_digest, shutdown_orchestrator, start_orchestrator, start_serve
from orchestration.training import train_peers, train_students, workers_test_split


REGIMES: tuple[RunRegime, ...] = (co_training.REGIME, continual.REGIME, PLAIN)  # the first active one shapes a run


def regime_of(cfg: RunConfig) -> RunRegime:
    return next(regime for regime in REGIMES if regime.active(cfg))


class RunState:
    """Phases that finished, and the fingerprint of the training rows they trained on,
    persisted atomically in `<run_dir>/state.json`."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "state.json"
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.phases: dict[str, dict[str, Any]] = saved.get("phases", {})
        self.data: Optional[str] = saved.get("data")

    def check_data(self, fingerprint: str, where: str) -> None:
        """Refuse to resume phases that finished on other training rows (the same file names
        with other contents, say): their figures would stand beside this data's."""
        if self.phases and self.data is not None and self.data != fingerprint:
            raise ConfigError(where, [f"data: the run's finished phases ({', '.join(sorted(self.phases))}) trained "
                                      f"on other rows (fingerprint {self.data}, now {fingerprint}); give the run "
                                      f"another name (--run-name) or remove its folder to train on this data"])
        self.data = fingerprint

    def finish(self, phase: str, metrics: dict[str, Any]) -> None:
        self.phases[phase] = metrics
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"phases": self.phases, "data": self.data}, indent=2))
        tmp.replace(self.path)


def run(config_path: str, *, run_name: Optional[str] = None, output_dir: Optional[str] = None,
        console: Optional[Console] = None, overrides: Optional[dict[str, Any]] = None,
        verbose: bool = True) -> list[dict[str, Any]]:
    """Run the whole experiment in `config_path`; return the rows of its results table.

    `overrides` maps dotted field paths to values (`--set` on the command line). Without
    `verbose`, Ray's, Serve's, Train's and DeepSpeed's output goes to `<run>/logs/run.log`
    and the console shows the run's own view (`orchestration.quiet_output`).
    """
    console = console or Console()
    flags = {key: value for key, value in (("run.name", run_name), ("run.output_dir", output_dir)) if value is not None}
    cfg = load_run_config(config_path, {**(overrides or {}), **flags})
    folder = run_folder(cfg)
    pulled = folder.pull()  # a run folder on object storage: its files, for a resumed run on a new driver
    (folder.local / "config.json").write_text(cfg.model_dump_json(indent=2))
    console.print(f"run [bold]{cfg.run.name}[/bold] -> {folder.location}")
    with (nullcontext() if verbose else quiet_output(folder.local, console, before_restore=_disconnect)) as log:
        if log is not None:
            console.print(f"logs of Ray, Serve, Train and DeepSpeed: {folder.child(str(LOG_FILE))} (--verbose shows "
                          f"them here)", highlight=False)
        return _run(cfg, folder, pulled, console)


def _disconnect() -> None:
    """Leave Ray at the end of a quiet run: its last streamed worker lines go to the run's log."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _run(cfg: RunConfig, folder: RunFolder, pulled: int, console: Console) -> list[dict[str, Any]]:
    from cluster import connect
    from teachers import resolve_model

    run_dir = folder.local
    if folder.remote:
        console.print(f"working copy of its files: {run_dir} ({pulled} files pulled); checkpoints go straight to "
                      f"{folder.child('train')}", highlight=False)
    dataset = load_run_data(cfg, console)
    methods = checked_terms(cfg)
    offline = cfg.distill.mode == "offline"
    stores = offline_stores(cfg, dataset.teacher_view()) if offline and cfg.teachers else {}  # a stale store fails here
    metric = {"embedding": "test_cosine", "lm": "test_perplexity"}.get(dataset.kind, "test_accuracy")
    if not streams_data(cfg):
        console.print(f"connected to {connect()}")
    state = RunState(run_dir)
    state.check_data(dataset.fingerprint, f"run {cfg.run.name!r} ({folder.location})")
    ingress_digest = ingress_token_digest(cfg)
    if not offline:
        start_serve(cfg)
    orchestrator = start_orchestrator(cfg, run_dir, ingress_digest, dataset)
    if cfg.serve.grpc_port is not None:
        import ray

        console.print(f"gRPC ingress (TeacherService, token {cfg.serve.grpc_token_file}): "
                      f"{ray.get(orchestrator.ingress_address.remote())}", highlight=False)
    try:
        reference = None
        if offline:
            teachers = use_stores(cfg, orchestrator, stores, console)
        else:
            teachers, reference = deploy_teachers(cfg, orchestrator, dataset, console)
        if reference is not None:  # what `distillery export` scores an encoder against, with no teacher running
            np.save(run_dir / REFERENCE_FILE, reference)
        student_model = resolve_model(cfg.student.model, in_features=dataset.in_features,
                                      num_classes=dataset.num_classes,
                                      allowed_modules=cfg.run.allowed_factory_modules)
        regime = regime_of(cfg)
        planned_by_peer = regime.plan(RunContext(
            cfg, dataset, methods, student_model, orchestrator, RayRunControl(orchestrator), state.phases, teachers,
            {name: folder for name, (folder, _) in stores.items()}, console))
        _train(cfg, planned_by_peer, state, folder, orchestrator, reference, dataset.test, console, metric)
        rows = _print_results(cfg, regime.results(cfg, state.phases, teachers), dataset.name, folder, console)
    finally:
        shutdown_orchestrator(orchestrator)
        folder.push()
    _print_audit(console, folder, cfg.run.name, cfg.run.output_dir)
    return rows


def streams_data(cfg: RunConfig) -> bool:
    """Whether the run reads a streamed source (whose check runs on the cluster)."""
    return cfg.data.source is not None and cfg.data.source.stream


def load_run_data(cfg: RunConfig, console: Console) -> Any:
    """The run's dataset, its notes printed; what the driver reads of the data once (the classes)
    goes into the config the workers get. A streamed source is checked by Ray tasks on the
    cluster (`ingest.cluster_scan`), so the driver connects first; other data is loaded before
    any Ray call, so a data error shows before a cluster starts."""
    from cluster import connect
    from ingest import load_dataset

    if streams_data(cfg):
        console.print(f"connected to {connect()}")
    dataset = load_dataset(cfg.data, progress=data_progress(console), on_cluster=streams_data(cfg))
    for note in dataset.notes:
        console.print(f"data: {note}", highlight=False)
    if cfg.data.classification and cfg.data.source is not None and cfg.data.source.num_classes is None:
        cfg.data.source.num_classes = dataset.num_classes  # read from the data once; the workers reuse it
    if cfg.data.source is not None and cfg.data.source.format == "images" and cfg.data.source.classes is None:
        cfg.data.source.classes = list(dataset.class_names)  # the train folder's, for every later reader
    return dataset


def _train(cfg: RunConfig, planned_by_peer: dict[str, list[Any]], state: RunState, folder: RunFolder,
           orchestrator: Any, reference: Any, test_split: Any, console: Console, metric: str) -> None:
    """Train the planned phases not done earlier (a trainer per peer in co-training), each
    phase's figures printed and recorded as it finishes."""
    from orchestration.progress import follow

    metric_title = METRICS[metric][0]
    by_peer = {peer: [job for job in planned if job.phase not in state.phases]
               for peer, planned in planned_by_peer.items()}
    jobs = [job for planned in by_peer.values() for job in planned]
    for phase, metrics in state.phases.items():
        console.print(Text(f"{phase}: done earlier, {metric_title} {metrics[metric]:.4f}"))
    if jobs:
        several = list(by_peer) != [""]  # co-training: a trainer per peer
        trainers = f"{len(by_peer)} trainers of " if several else ""
        console.print(f"students: {', '.join(job.phase for job in jobs)} on {trainers}{cfg.student.num_workers} "
                      f"Ray Train workers, DeepSpeed ZeRO-{cfg.student.zero_stage}"
                      f"{' (optimizer offloaded to host memory)' if cfg.student.offload_optimizer else ''}")
        test = workers_test_split(cfg, test_split)
        with folder.pushing():
            phases = follow(orchestrator, (lambda: train_peers(by_peer, cfg, test)) if several else
                            (lambda: train_students(jobs, cfg, reference, streamed_test=test)), console)
        for phase, metrics in phases.items():
            resumed = f", resumed from step {metrics['resumed_from_step']}" if metrics["resumed_from_step"] else ""
            if "stopped_at_step" in metrics:
                resumed += f", stopped early (distillery stop) at step {metrics['stopped_at_step']}"
            console.print(Text(f"{phase}: {metric_title} {metrics[metric]:.4f} after {metrics['steps']} "
                               f"steps in {metrics['train_s']:.1f}s{resumed}"))
            state.finish(phase, metrics)
        folder.push()


def _print_results(cfg: RunConfig, results: tuple[list[dict[str, Any]], Any], dataset_name: str, folder: RunFolder,
                   console: Console) -> list[dict[str, Any]]:
    """The results table and report written and shown; returns the table's rows."""
    rows, extra = results
    title = f"Distillery run {cfg.run.name}: {dataset_name}"
    write_results(folder.local, rows, title, extra)
    console.print(rich_table(rows, title))
    if extra:
        console.print(extra, highlight=False)
    for line in gain_lines(rows):
        console.print(line)
    report = write_report(folder.local)
    console.print(f"results: {folder.child('results.md')}; metrics: {folder.child('metrics.jsonl')}; "
                  f"report with plots: {folder.child(str(report.relative_to(folder.local)))}", highlight=False)
    return rows


def _print_audit(console: Console, folder: RunFolder, run: str, output_dir: str) -> None:
    """The audit's verdict on the finished run, from its processes' audit files. On object
    storage the replicas upload their last answers as they stop, which may be after this."""
    from orchestration.audit import audit_run

    command = f"distillery audit --run {run} --output-dir '{output_dir}'"
    if folder.remote:
        console.print(f"audit: `{command}` checks every batch was applied exactly once", highlight=False)
        return
    try:
        audits, summary = audit_run(folder.child(AUDIT_FOLDER))
    except (OSError, KeyError, TypeError, ValueError) as exc:  # the run's results stand; say what the audit lacks
        console.print(f"audit: could not be read ({type(exc).__name__}: {exc}); run `{command}`", highlight=False)
        return
    verdict = ("every planned batch applied exactly once" if summary["exactly_once"] else
               "NOT exactly once: " + "; ".join(a.line() for a in audits if a.problems))
    console.print(f"audit: {verdict} (`{command}` for each phase)", highlight=False)


def generate_only(config_path: str, console: Console, overrides: Optional[dict[str, Any]] = None) -> str:
    """`distillery generate`: deploy the config's teachers, write the generated dataset, shut down."""
    from cluster import ConfigError, connect
    from ingest import load_dataset
    from orchestration.regimes.sequence_level import generate

    cfg = load_run_config(config_path, overrides)
    if not cfg.data.language_model or not cfg.teachers:
        raise ConfigError(config_path, [f"data: generate needs language-model teachers on language-model data "
                                        f"(stdlib_functions or a prompt/completion source; got "
                                        f"{cfg.data.described}, {len(cfg.teachers)} teachers)"])
    dataset = load_dataset(cfg.data)
    console.print(f"connected to {connect()}")
    start_serve(cfg)
    orchestrator = start_orchestrator(cfg, run_folder(cfg).local)
    try:
        teachers, _ = deploy_teachers(cfg, orchestrator, dataset, console)
        return generate(cfg, dataset, {name: info["model_version"] for name, info in teachers.items()}, console)
    finally:
        shutdown_orchestrator(orchestrator)


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


