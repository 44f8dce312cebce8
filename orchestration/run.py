"""`distillery run CONFIG`: the driver of one distillation run.

Validate the config, connect to Ray, start the orchestrator, deploy the teachers, then train
the KD student and the no-KD baseline for every seed with Ray Train + DeepSpeed. A phase that
finished is recorded in `state.json` and skipped on restart; a phase cut short resumes from
its last checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.text import Text

from orchestration.config import RunConfig, load_run_config
from orchestration.precompute import offline_stores
from orchestration.report import write_report
from orchestration.results import METRICS, gain_lines, ptq_lines, retained_gain_lines, rich_table, summarize, write_results
from orchestration.continual_results import continual_rows, matrix_markdown
from orchestration.online_results import online_gain_lines, online_rows
from orchestration.phases import student_jobs
from orchestration.regimes.co_training import online_jobs
from orchestration.regimes.continual import continual_jobs
from orchestration.run_control import RayRunControl
from orchestration.run_teachers import deploy_teachers, use_stores
from orchestration.services import ingress_token_digest, shutdown_orchestrator, start_orchestrator, start_serve
from orchestration.training import train_peers, train_students



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
            teachers = use_stores(cfg, orchestrator, stores, console)
        else:
            teachers, reference = deploy_teachers(cfg, orchestrator, dataset, console)
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
        shutdown_orchestrator(orchestrator)


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
        teachers, _ = deploy_teachers(cfg, orchestrator, dataset, console)
        return generate(cfg, dataset, {name: info["model_version"] for name, info in teachers.items()}, console)
    finally:
        shutdown_orchestrator(orchestrator)


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


