"""`distillery teacher add | serve | remove | weight | list`: the teachers of a running job."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import typer

from orchestration.cli_common import RUN_OPTION, call_orchestrator, console, orchestrator_of, read_optional

teacher_app = typer.Typer(no_args_is_help=True, help="Add, remove and list the teachers of a running job.")


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
    orchestrator = orchestrator_of(run)
    console.print(f"connected to run {run}: {time.perf_counter() - start:.1f}s")
    if serve_app is not None:
        info = call_orchestrator(run, "add_serve_app", serve_app, weight)
    elif endpoint is not None:
        from teachers import EndpointSpec, parse_endpoint_url

        parse_endpoint_url(endpoint)
        token = read_optional(token_file)
        spec = EndpointSpec(endpoint, token=token.decode().strip() if token else None, ca_pem=read_optional(ca_file),
                            cert_pem=read_optional(cert_file), key_pem=read_optional(key_file), application=application)
        files = {key: os.path.abspath(path) if path else None for key, path in
                 (("token_file", token_file), ("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file))}
        info = call_orchestrator(run, "add_endpoint", name, spec, weight, files)
    else:
        teacher = load_yaml_model(TeacherConfig, teacher_yaml)
        outside = paths_outside_roots(teacher.model_dump(), fields=("weights",))
        if outside:
            raise ConfigError(teacher_yaml, outside)
        info = call_orchestrator(run, "add_teacher", teacher.model_dump())
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

    token = read_optional(token_file)
    serve_teacher(teacher_yaml, port=port, host=host, run_config=config, console=console,
                  security_files={"cert_pem": read_optional(tls_cert), "key_pem": read_optional(tls_key),
                                  "client_ca_pem": read_optional(client_ca),
                                  "token": token.decode().strip() if token else None, "insecure": insecure})


@teacher_app.command("remove")
def teacher_remove(name: str = typer.Argument(..., help="teacher name"), run: str = RUN_OPTION) -> None:
    """Stop using a teacher and delete its Serve application."""
    info = call_orchestrator(run, "remove_teacher", name)
    console.print(f"teacher {name} removed from run {run}: teacher set v{info['teacher_set_version']}")


@teacher_app.command("weight")
def teacher_weight(name: str = typer.Argument(..., help="teacher name"),
                   weight: float = typer.Argument(..., help="its new static weight (>= 0; 0 mutes it)"),
                   run: str = RUN_OPTION) -> None:
    """Change a teacher's weight in a running job (workers use it from their next step)."""
    info = call_orchestrator(run, "set_weight", name, weight)
    console.print(f"teacher {name} of run {run}: weight {info['previous']:g} -> {info['weight']:g}, "
                  f"teacher set v{info['teacher_set_version']}")


@teacher_app.command("list")
def teacher_list(run: str = RUN_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the teachers of a running job with their weights and versions."""
    from orchestration.progress import status_table

    status = call_orchestrator(run, "status")
    if as_json:
        print(json.dumps({"teacher_set_version": status["teacher_set_version"], "teachers": status["teachers"]}))
    else:
        console.print(status_table(status))
