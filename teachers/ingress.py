"""A run's gRPC ingress: TeacherService for callers outside Ray, in front of the run's Serve teachers.

Serve's own gRPC proxy (Ray 2.60) listens plaintext on every interface of its node, so the run
does not use it. Its ingress is a gRPC server of its own, in the orchestrator's process (on the
driver's node), that answers each call through the Serve handle of the teacher it names:

- it listens on `serve.grpc_host` only: 127.0.0.1 unless the config names another interface;
- off loopback it needs TLS (`serve.grpc_tls_cert_file` and `serve.grpc_tls_key_file`, and
  `serve.grpc_tls_client_ca_file` to ask for client certificates); plaintext is refused there;
- every call carries the run's bearer token (`serve.grpc_token_file`);
- a call names its teacher with the metadata `application: teacher-<name>`, and only the
  run's own Serve teachers are reached: not another run's apps, not anything else in Serve.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Sequence

from ray import serve

from ingest import Batch
from teachers.grpc_service import (DEFAULT_CHUNK_BYTES, ServerSecurity, TeacherNotFound, TeacherServicer,
                                   start_grpc_server)
from teachers.loaded import TeacherAppArgs
from teachers.teacher_set import app_name


class ServedTeacher:
    """A Serve teacher seen through its handle, answering as a `LoadedTeacher` would."""

    def __init__(self, args: TeacherAppArgs, app: str, timeout_s: float):
        self.args, self.app, self.timeout_s = args, app, timeout_s
        self._handle = serve.get_app_handle(app)
        self._vocab_size: Optional[int] = None
        self._described = False

    def describe(self) -> dict[str, Any]:
        info = self._handle.describe.remote().result(timeout_s=self.timeout_s)
        self._vocab_size, self._described = info.get("vocab_size"), True
        return info

    @property
    def vocab_size(self) -> Optional[int]:
        if not self._described:
            self.describe()
        return self._vocab_size

    def records(self, batches: list[Batch], **settings: Any) -> list:
        payload = {"batches": [b.payload() for b in batches], **settings}
        return self._handle.remote(payload).result(timeout_s=self.timeout_s)


class RunIngress:
    """TeacherService on `host:port` for the run's Serve teachers (`apps()`: teacher name ->
    its app arguments, read at every call, so added and removed teachers are seen at once)."""

    def __init__(self, run: str, apps: Callable[[], dict[str, TeacherAppArgs]], *, host: str, port: int,
                 token_sha256: str, tls: Optional[dict[str, Optional[bytes]]] = None, timeout_s: float = 60.0):
        self.run, self._apps, self.timeout_s, self.host = run, apps, timeout_s, host
        self._served: dict[str, ServedTeacher] = {}
        self._lock = threading.Lock()
        tls = tls or {}
        security = ServerSecurity(cert_pem=tls.get("cert"), key_pem=tls.get("key"), client_ca_pem=tls.get("client_ca"),
                                  insecure=not tls.get("cert"))
        servicer = TeacherServicer(self._route, token_sha256, DEFAULT_CHUNK_BYTES, f"run {run!r} gRPC ingress")
        self.server, self.port = start_grpc_server(servicer, host=host, port=port, security=security,
                                                   what=f"run {run} gRPC ingress")
        self.scheme = "grpc" if security.insecure else "grpcs"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def _route(self, metadata: Sequence[tuple[str, Any]]) -> ServedTeacher:
        named = [v for k, v in metadata if k.lower() == "application"]
        teachers = {app_name(name): args for name, args in self._apps().items()}
        app = named[0] if named else None
        if app not in teachers:
            raise TeacherNotFound(f"{'no application metadata' if app is None else f'no teacher app {app!r}'} in "
                                  f"run {self.run!r}; send 'application: <app>' with one of {sorted(teachers)}")
        with self._lock:
            served = self._served.get(app)
            if served is None or served.args is not teachers[app]:  # a teacher removed and added again
                served = self._served[app] = ServedTeacher(teachers[app], app, self.timeout_s)
            return served

    def stop(self) -> None:
        self.server.stop(grace=1.0)
