"""The `distillery` command line (also `python -m orchestration`)."""

from __future__ import annotations

import json
import os
import logging
import sys
from typing import Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from cluster import DistilleryError, log_own_warnings, prepare_ray_env
from planning import fit_law_command, plan_command, sweep_command

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distributed knowledge distillation on Ray: Serve teachers, Train + DeepSpeed students.")
teacher_app = typer.Typer(no_args_is_help=True, help="Add, remove and list the teachers of a running job.")
app.add_typer(teacher_app, name="teacher")
console = Console(soft_wrap=True)  # a line in a log is never cut in two
RUN_OPTION = typer.Option(..., "--run", help="name of the running job (run.name in its config)")


def _orchestrator(run: str):
    import ray

    from cluster import NAMESPACE, RunNotFoundError, connect, orchestrator_name

    try:
        connect(start_local=False)
    except ConnectionError as exc:
        raise RunNotFoundError(f"no Ray cluster to attach to ({exc}); set RAY_ADDRESS to the cluster of "
                               f"run {run!r}") from None
    try:
        return ray.get_actor(orchestrator_name(run), namespace=NAMESPACE)
    except ValueError:
        raise RunNotFoundError(f"no running job named {run!r} on this Ray cluster; check the name "
                               f"(run.name of its config) and that the job is still going") from None


def _call(run: str, method: str, *args: Any) -> Any:
    import ray

    return ray.get(getattr(_orchestrator(run), method).remote(*args))


@app.command()
def run(config: str = typer.Argument(..., help="experiment config, e.g. deploy/configs/quickstart.yaml"),
        run_name: Optional[str] = typer.Option(None, "--run-name", help="override run.name"),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", help="override run.output_dir"),
        overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field: "
                                                      "--set distill.temperature=2 (value read as YAML)"),
        verbose: bool = typer.Option(False, "--verbose", help="show Ray's, Serve's, Train's and DeepSpeed's output "
                                                              "here too, not only in <run>/logs/run.log")) -> None:
    """Run a distillation job: deploy teachers, distill, train the baseline, print the results."""
    from orchestration.run import run as run_job

    run_job(config, run_name=run_name, output_dir=output_dir, console=console, overrides=_parse_sets(overrides),
            verbose=verbose)


@app.command()
def check(config: str = typer.Argument(..., help="experiment config, e.g. deploy/configs/quickstart.yaml"),
          overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field (value read as YAML)"),
          ) -> None:
    """Check a config and its data without starting Ray: open every split, check the column
    roles, print rows, classes and inputs."""
    from orchestration.check import check as check_config

    check_config(config, console, _parse_sets(overrides))


@app.command()
def warmup() -> None:
    """Build DeepSpeed's ops for this machine's accelerator once: the communication op (the C++
    shared-memory op on CPU, about 40 s on 2 cores) and the CPU Adam of ZeRO-Offload
    (`student.offload_optimizer`); otherwise the first run's workers build them."""
    import time

    from students import import_deepspeed

    import_deepspeed()
    from deepspeed.accelerator import get_accelerator
    from deepspeed.comm.torch import build_shm_op

    start = time.perf_counter()
    op = build_shm_op()
    console.print(f"DeepSpeed communication op {'ready' if op is not None else 'not needed here'} "
                  f"({time.perf_counter() - start:.1f}s)")
    start = time.perf_counter()
    get_accelerator().create_op_builder("CPUAdamBuilder").load()
    console.print(f"DeepSpeed CPU Adam (ZeRO-Offload) ready ({time.perf_counter() - start:.1f}s)")


@app.command("serve-config")
def serve_config_command(config: str = typer.Argument(..., help="a run config whose teachers form the pool"),
                         output: str = typer.Option(..., "-o", "--output", help="the Serve config to write"),
                         overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field")) -> None:
    """Write a Serve config (`serve deploy`) that runs the config's teachers as a standing pool
    (training uncached teachers first); jobs use them with `teacher add --serve-app`."""
    from pathlib import Path

    from orchestration.config import load_run_config
    from orchestration.serve_pool import write_serve_config

    with console.status("training or loading the teachers..."):
        written = write_serve_config(load_run_config(config, _parse_sets(overrides)), Path(output))
    apps = ", ".join(a["name"] for a in written["applications"])
    console.print(f"{output}: {apps}. Start them with `serve deploy {output}`; a job uses one with "
                  f"`distillery teacher add --run <run> --serve-app <app>`")


@app.command()
def cache(prune_older_than: Optional[float] = typer.Option(
              None, "--prune-older-than", help="remove entries no run has read for this many days"),
          dry_run: bool = typer.Option(False, "--dry-run", help="with --prune-older-than: list, remove nothing"),
          cluster: bool = typer.Option(False, "--cluster", help="every alive node of the Ray cluster (RAY_ADDRESS), "
                                                                "not only this machine")) -> None:
    """Show the node caches that grow with what runs read (offline stores' mapped copies, files
    fetched from object storage, the driver's scans of streamed files) and prune what no run
    has read lately. The teacher cache and runs' files are never touched."""
    from rich.table import Table

    from cluster import cache_report, connect

    if cluster:
        from orchestration.cluster_caches import cluster_cache_reports

        connect(start_local=False)
        reports = cluster_cache_reports(prune_older_than, dry_run)
    else:
        reports = [cache_report(prune_older_than, dry_run)]
    pruning = prune_older_than is not None
    table = Table("node", "cache", "entries", "MB", *(["pruned", "pruned MB"] if pruning else []))
    for report in reports:
        for kind, kept in report["kept"].items():
            pruned = report["removed"][kind]
            table.add_row(report["node"], kind, str(kept["entries"]), f"{kept['bytes'] / 2**20:.1f}",
                          *([str(pruned["entries"]), f"{pruned['bytes'] / 2**20:.1f}"] if pruning else []))
    console.print(table)
    for report in reports:
        console.print(f"{report['node']}: {report['root']}", highlight=False, soft_wrap=True)
    if dry_run and pruning:
        console.print("dry run: nothing was removed (the pruned columns say what would be)")


def _run_folder(output_dir: str, run: str, with_checkpoints: bool = False):
    """A finished or running run's folder; on object storage, its working copy pulled first
    (with its checkpoints, for an export)."""
    from cluster import RunFolder, default_cache_dir, download_folder, join_uri

    folder = RunFolder(output_dir, run, default_cache_dir())
    if folder.remote:
        console.print(f"{folder.location}: {folder.pull()} files pulled into {folder.local}", highlight=False)
        if with_checkpoints:
            download_folder(join_uri(folder.remote, "train"), folder.local / "train")
    return folder


@app.command()
def report(run: str = RUN_OPTION,
           output_dir: str = typer.Option("runs", "--output-dir", help="the folder that holds the run's folder")) -> None:
    """Write (again) `<output-dir>/<run>/report.md` with its PNG plots, from the run's metrics and
    results: a finished run has one already; this draws one for a run still going or cut short."""
    from orchestration.report import write_report

    folder = _run_folder(output_dir, run)
    if not (folder.local / "metrics.jsonl").is_file():
        raise typer.BadParameter(f"{folder.location} has no metrics.jsonl: pass the run's --output-dir")
    written = write_report(folder.local)
    folder.push()
    console.print(f"report: {folder.child(str(written.relative_to(folder.local)))}", highlight=False)


@app.command()
def export(run: str = RUN_OPTION,
           output_dir: str = typer.Option("runs", "--output-dir", help="the folder that holds the run's folder"),
           phase: Optional[str] = typer.Option(None, "--phase", help="the phase to export (default: every finished "
                                                                     "distilled student; a wrong name lists them)"),
           to: Optional[str] = typer.Option(None, "--to", help="where to write (default <run>/export; one folder "
                                                               "per phase)")) -> None:
    """Gather a run's students (default: every finished distilled student, one per method and
    seed, not the baselines) into safetensors (and a Hugging Face folder for HF language
    models), from the phase's newest complete checkpoint (any ZeRO stage) or the export it
    wrote when it finished; score each on the test split with the run's metric against what
    the run recorded."""
    from pathlib import Path

    from orchestration.export import STAGES, export_run
    from orchestration.progress import StageBar
    from students import CheckpointError

    folder = _run_folder(output_dir, run, with_checkpoints=True)
    if not (folder.local / "config.json").is_file():
        raise typer.BadParameter(f"{folder.location} has no config.json: pass the run's --output-dir")
    bar: list[tuple[str, StageBar]] = []  # the phase being exported and its stage bar

    def on_stage(phase: str, stage: str) -> None:
        if not bar or bar[0][0] != phase:
            if bar:
                bar.pop()[1].__exit__(None, None, None)
            bar.append((phase, StageBar(console, f"export {run} {phase}", STAGES).__enter__()))
        bar[0][1](stage)

    try:
        rows = export_run(folder.local, Path(to) if to else None, phase, on_stage=on_stage)
    except CheckpointError as exc:
        console.print(f"export {run}: {exc}", style="red", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if bar:
            bar.pop()[1].__exit__(*sys.exc_info())
    folder.push()
    for out in rows:
        recorded = f"{out['recorded']:.4f}" if out["recorded"] is not None else "not recorded (phase unfinished)"
        step = f"step {out['step']}" if out["step"] is not None else "its end"
        agreement = (f", rank agreement {out['test_rank_agreement']:.4f}" if "test_rank_agreement" in out else "")
        console.print(f"phase {out['phase']} ({step}, {out['parameters']:,} parameters, from {out['source']}) -> "
                      f"{out['folder']}{' and ' + out['hf_folder'] if 'hf_folder' in out else ''}\n"
                      f"{out['metric']}: {out['reproduced']:.4f} from the export{agreement}, {recorded} recorded "
                      f"by the run", highlight=False)


@app.command()
def audit(run: str = RUN_OPTION,
          output_dir: str = typer.Option("runs", "--output-dir", help="the folder that holds the run's folder"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Check that every planned batch of every phase was applied exactly once, with targets its
    teacher set held and a replica answered, from the audit files the run's processes wrote
    (never from the training loop's own ledger). Exits 1 when a batch was lost, applied twice,
    unplanned, stale or unanswered."""
    import json

    from cluster import AUDIT_FOLDER, RunFolder, default_cache_dir
    from orchestration.audit import audit_run

    location = RunFolder(output_dir, run, default_cache_dir()).child(AUDIT_FOLDER)
    audits, summary = audit_run(location)
    if not audits:
        raise typer.BadParameter(f"{location} holds no applied batches: pass the run's --output-dir (a run started "
                                 f"before the audit existed has none)")
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        for phase in audits:
            console.print(phase.line(), highlight=False)
        console.print(f"{run}: " + ("every planned batch applied exactly once" if summary["exactly_once"]
                                    else "NOT exactly once (see above)"), highlight=False)
    if not summary["exactly_once"]:
        raise typer.Exit(1)


@app.command()
def stop(run: str = RUN_OPTION) -> None:
    """End a running job early: the phase in training stops at its next check (every
    student.log_every steps), is evaluated and written to the results; phases not started are
    skipped, and rerunning the same command later trains them."""
    info = _call(run, "stop_requested") or _call(run, "request_stop")
    if info is True:
        console.print(f"run {run}: a stop was already requested")
        return
    console.print(f"run {run}: stop requested during phase {info['phase'] or '(starting)'}; it ends at its next "
                  f"check, after evaluating the student")


@app.command()
def generate(config: str = typer.Argument(..., help="experiment config whose teacher writes the completions"),
             overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field (YAML value)")) -> None:
    """Sequence-level KD data: the teacher endpoint completes the training prompts (Ray Data +
    Serve, sampling from the config's `generate` section) into a Parquet dataset; fine-tune
    students on it with `data.generated: <folder>` or a `train_data: generated` method."""
    from orchestration.run import generate_only

    folder = generate_only(config, console, _parse_sets(overrides))
    console.print(f"generated dataset: {folder} (Parquet: row, sample, prompt, prompt_ids, completion, "
                  f"completion_ids, teacher_version)")


@app.command()
def precompute(config: str = typer.Argument(..., help="experiment config whose teachers to run"),
               overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field (YAML value)")) -> None:
    """Run the teachers over the training set with Ray Data and write top-k soft targets to the offline store."""
    from cluster import connect
    from ingest import load_dataset
    from orchestration.check import data_progress
    from orchestration.config import load_run_config
    from orchestration.precompute import precompute as run_precompute

    cfg = load_run_config(config, _parse_sets(overrides))
    dataset = load_dataset(cfg.data, progress=data_progress(console)).teacher_view()
    console.print(f"connected to {connect()}")
    manifests = run_precompute(cfg, dataset, console)
    console.print(f"store ready for {', '.join(manifests)}; train from it with distill.mode: offline")


def _parse_sets(items: Optional[list[str]]) -> dict[str, Any]:
    from cluster import parse_yaml

    out = {}
    for item in items or []:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"--set {item!r}: expected path=value, e.g. distill.temperature=2")
        out[path.strip()] = parse_yaml(value, f"--set {path}")
    return out


def _read(path: Optional[str]) -> Optional[bytes]:
    from cluster import ConfigError

    if path is None:
        return None
    try:
        return open(path, "rb").read()
    except OSError as exc:
        raise ConfigError(path, [f"<file>: cannot read it: {exc.strerror}"]) from None


@teacher_app.command("add")
def teacher_add(teacher_yaml: Optional[str] = typer.Argument(None, help="a teacher config (one entry of `teachers:`)"),
                run: str = RUN_OPTION,
                endpoint: Optional[str] = typer.Option(None, "--endpoint", help="an external TeacherService: "
                                                       "grpc://host:port (plaintext, loopback) or grpcs://host:port"),
                name: Optional[str] = typer.Option(None, "--name", help="name in the run (default: the endpoint's)"),
                weight: float = typer.Option(1.0, "--weight", help="the weight of the endpoint or Serve app teacher"),
                token_file: Optional[str] = typer.Option(None, "--token-file", help="bearer token the endpoint requires"),
                ca_file: Optional[str] = typer.Option(None, "--ca-file", help="CA certificate of the endpoint (TLS)"),
                cert_file: Optional[str] = typer.Option(None, "--cert-file", help="client certificate (mutual TLS)"),
                key_file: Optional[str] = typer.Option(None, "--key-file", help="client key (mutual TLS)"),
                application: Optional[str] = typer.Option(None, "--application",
                                                          help="Serve application, when the endpoint is Serve's gRPC ingress"),
                serve_app: Optional[str] = typer.Option(None, "--serve-app", help="a standing Serve application of "
                                                        "this cluster (teacher-<name>, from `serve deploy`)"),
                wait_s: float = typer.Option(60.0, "--wait", help="seconds to wait for the train workers to use "
                                                                  "the teacher (0: do not wait)")) -> None:
    """Start using a new teacher in a running job: deploy one from a config, register an
    endpoint, or use a standing Serve application. Prints each stage with its time, up to the
    first training record that uses the teacher."""
    import time

    from cluster import ConfigError, load_yaml_model, paths_outside_roots
    from teachers import TeacherConfig

    if sum(x is not None for x in (teacher_yaml, endpoint, serve_app)) != 1:
        raise typer.BadParameter("give one of: a teacher config file, --endpoint, --serve-app")
    start = time.perf_counter()
    orchestrator = _orchestrator(run)
    console.print(f"connected to run {run}: {time.perf_counter() - start:.1f}s")
    if serve_app is not None:
        info = _call(run, "add_serve_app", serve_app, weight)
    elif endpoint is not None:
        from teachers import EndpointSpec, parse_endpoint_url

        parse_endpoint_url(endpoint)
        token = _read(token_file)
        spec = EndpointSpec(endpoint, token=token.decode().strip() if token else None, ca_pem=_read(ca_file),
                            cert_pem=_read(cert_file), key_pem=_read(key_file), application=application)
        files = {key: os.path.abspath(path) if path else None for key, path in
                 (("token_file", token_file), ("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file))}
        info = _call(run, "add_endpoint", name, spec, weight, files)
    else:
        teacher = load_yaml_model(TeacherConfig, teacher_yaml)
        outside = paths_outside_roots(teacher.model_dump(), fields=("weights",))
        if outside:
            raise ConfigError(teacher_yaml, outside)
        info = _call(run, "add_teacher", teacher.model_dump())
        for stage, seconds in info["stages"].items():
            what = {"weights": "weights cached" if info["cached"] else "weights trained", "deploy": "deployed",
                    "check": "output space checked"}[stage]
            console.print(f"{what}: {seconds:.1f}s")
    console.print(f"teacher {info['name']} added to run {run}: teacher set v{info['teacher_set_version']}, "
                  f"model version {info['model_version']}, {info['output_space']}", highlight=False)
    if wait_s > 0:
        used = _wait_until_used(orchestrator, info["name"], wait_s)
        console.print(f"in use by the train workers: {time.perf_counter() - start:.1f}s from the command" if used else
                      f"not in a training record within {wait_s:g}s (no phase training now?); the workers take it "
                      f"from their next step boundary")


def _wait_until_used(orchestrator: Any, teacher: str, timeout_s: float) -> bool:
    """Whether a train worker's record names `teacher` among the teachers it used, within `timeout_s`."""
    import time

    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = ray.get(orchestrator.status.remote())["progress"]
        if any(teacher in record.get("teachers", []) for record in progress.values()):
            return True
        time.sleep(0.1)
    return False


@teacher_app.command("serve")
def teacher_serve(teacher_yaml: str = typer.Argument(..., help="a teacher config (one entry of `teachers:`)"),
                  port: int = typer.Option(..., "--port", help="port to listen on (0: any free port)"),
                  host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
                  config: Optional[str] = typer.Option(None, "--config", help="a run config whose data and "
                                                       "distill sections apply (default: their defaults)"),
                  tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="server certificate (PEM)"),
                  tls_key: Optional[str] = typer.Option(None, "--tls-key", help="server private key (PEM)"),
                  client_ca: Optional[str] = typer.Option(None, "--client-ca",
                                                          help="require client certificates signed by this CA"),
                  token_file: Optional[str] = typer.Option(None, "--token-file",
                                                           help="require this bearer token (file holds the token)"),
                  insecure: bool = typer.Option(False, "--insecure", help="plaintext; only allowed on loopback")) -> None:
    """Run a teacher as a standalone gRPC TeacherService, with no Ray cluster."""
    from orchestration.standalone import serve_teacher

    token = _read(token_file)
    serve_teacher(teacher_yaml, port=port, host=host, run_config=config, console=console,
                  security_files={"cert_pem": _read(tls_cert), "key_pem": _read(tls_key),
                                  "client_ca_pem": _read(client_ca),
                                  "token": token.decode().strip() if token else None, "insecure": insecure})


@teacher_app.command("remove")
def teacher_remove(name: str = typer.Argument(..., help="teacher name"), run: str = RUN_OPTION) -> None:
    """Stop using a teacher and delete its Serve application."""
    info = _call(run, "remove_teacher", name)
    console.print(f"teacher {name} removed from run {run}: teacher set v{info['teacher_set_version']}")


@teacher_app.command("weight")
def teacher_weight(name: str = typer.Argument(..., help="teacher name"),
                   weight: float = typer.Argument(..., help="its new static weight (>= 0; 0 mutes it)"),
                   run: str = RUN_OPTION) -> None:
    """Change a teacher's weight in a running job (workers use it from their next step)."""
    info = _call(run, "set_weight", name, weight)
    console.print(f"teacher {name} of run {run}: weight {info['previous']:g} -> {info['weight']:g}, "
                  f"teacher set v{info['teacher_set_version']}")


@teacher_app.command("list")
def teacher_list(run: str = RUN_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the teachers of a running job with their weights and versions."""
    from orchestration.progress import status_table

    status = _call(run, "status")
    if as_json:
        print(json.dumps({"teacher_set_version": status["teacher_set_version"], "teachers": status["teachers"]}))
    else:
        console.print(status_table(status))


@app.command()
def status(run: str = RUN_OPTION, as_json: bool = typer.Option(False, "--json"),
           watch: bool = typer.Option(False, "--watch", help="a live view, refreshed until the run ends (Ctrl-C quits)"),
           interval: float = typer.Option(1.0, "--interval", help="seconds between refreshes with --watch")) -> None:
    """Show a running job: phase, step, loss, throughput and teachers."""
    from orchestration.progress import dashboard, progress_line, status_table

    if watch:
        _watch(run, interval, dashboard)
        return
    info = _call(run, "status")
    if as_json:
        print(json.dumps(info, default=str))
        return
    console.print(status_table(info))
    console.print(progress_line(info) if info["phase"] else "no phase running yet", highlight=False)


def _watch(run: str, interval: float, render) -> None:
    import time

    from rich.live import Live

    info = _call(run, "status")
    with Live(render(info), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    info = _call(run, "status")
                except Exception:  # noqa: BLE001 - the orchestrator is gone: the run ended
                    break
                live.update(render(info))
        except KeyboardInterrupt:
            return
    console.print(f"run {run} ended")


def _run_sweep_cell(config: str, console: Console) -> None:
    from orchestration.run import run

    run(config, console=console)


app.command("plan")(plan_command)
app.command("fit-law")(fit_law_command)
app.command("sweep")(sweep_command(_run_sweep_cell))


def main() -> None:
    prepare_ray_env()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log_own_warnings()
    try:
        app()
    except Exception as exc:
        # Ray wraps errors raised in the orchestrator; show the cause, not a stack of frames.
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, (DistilleryError, KeyError, ValueError)):
            message = cause.args[0] if isinstance(cause, KeyError) and cause.args else cause
            console.print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)
            sys.exit(2)
        raise
