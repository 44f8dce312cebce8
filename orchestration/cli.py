"""The `distillery` command line (also `python -m orchestration`)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from cluster.errors import DistilleryError
from cluster.ray_env import prepare_ray_env

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distributed knowledge distillation on Ray: Serve teachers, Train + DeepSpeed students.")
teacher_app = typer.Typer(no_args_is_help=True, help="Add, remove and list the teachers of a running job.")
app.add_typer(teacher_app, name="teacher")
console = Console()
RUN_OPTION = typer.Option(..., "--run", help="name of the running job (run.name in its config)")


def _orchestrator(run: str):
    import ray

    from cluster.connection import NAMESPACE, connect, orchestrator_name
    from cluster.errors import RunNotFoundError

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
        output_dir: Optional[str] = typer.Option(None, "--output-dir", help="override run.output_dir")) -> None:
    """Run a distillation job: deploy teachers, distill, train the baseline, print the results."""
    from orchestration.run import run as run_job

    run_job(config, run_name=run_name, output_dir=output_dir, console=console)


@teacher_app.command("add")
def teacher_add(teacher_yaml: str = typer.Argument(..., help="a teacher config (one entry of `teachers:`)"),
                run: str = RUN_OPTION) -> None:
    """Validate, deploy and start using a new teacher in a running job."""
    from cluster.config import TeacherConfig, load_yaml_model

    teacher = load_yaml_model(TeacherConfig, teacher_yaml)
    info = _call(run, "add_teacher", teacher.model_dump())
    console.print(f"teacher {info['name']} added to run {run}: teacher set v{info['teacher_set_version']}, "
                  f"model version {info['model_version']}, {info['output_space']}")


@teacher_app.command("remove")
def teacher_remove(name: str = typer.Argument(..., help="teacher name"), run: str = RUN_OPTION) -> None:
    """Stop using a teacher and delete its Serve application."""
    info = _call(run, "remove_teacher", name)
    console.print(f"teacher {name} removed from run {run}: teacher set v{info['teacher_set_version']}")


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
def status(run: str = RUN_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a running job: phase, step, loss, throughput and teachers."""
    from orchestration.progress import progress_line, status_table

    info = _call(run, "status")
    if as_json:
        print(json.dumps(info, default=str))
        return
    console.print(status_table(info))
    console.print(progress_line(info) if info["phase"] else "no phase running yet", highlight=False)


def main() -> None:
    prepare_ray_env()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Exception as exc:
        # Ray wraps errors raised in the orchestrator; show the cause, not a stack of frames.
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, (DistilleryError, KeyError, ValueError)):
            message = cause.args[0] if isinstance(cause, KeyError) and cause.args else cause
            console.print(Text.assemble(("error: ", "bold red"), str(message)))
            sys.exit(2)
        raise
