"""What every `distillery` command shares: the console, the --run option, reaching a running job's
orchestrator, and reading --set overrides and optional files."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # a line in a log is never cut in two
RUN_OPTION = typer.Option(..., "--run", help="name of the running job (run.name in its config)")


def orchestrator_of(run: str):
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


def call_orchestrator(run: str, method: str, *args: Any) -> Any:
    import ray

    return ray.get(getattr(orchestrator_of(run), method).remote(*args))


def parse_sets(items: Optional[list[str]]) -> dict[str, Any]:
    from cluster import parse_yaml

    out = {}
    for item in items or []:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"--set {item!r}: expected path=value, e.g. distill.temperature=2")
        out[path.strip()] = parse_yaml(value, f"--set {path}")
    return out


def read_optional(path: Optional[str]) -> Optional[bytes]:
    from cluster import ConfigError

    if path is None:
        return None
    try:
        return open(path, "rb").read()
    except OSError as exc:
        raise ConfigError(path, [f"<file>: cannot read it: {exc.strerror}"]) from None


def watch_live(run: str, interval: float, render) -> None:
    import time

    from rich.live import Live

    info = call_orchestrator(run, "status")
    with Live(render(info), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    info = call_orchestrator(run, "status")
                except Exception:  # noqa: BLE001 - the orchestrator is gone: the run ended
                    break
                live.update(render(info))
        except KeyboardInterrupt:
            return
    console.print(f"run {run} ended")
