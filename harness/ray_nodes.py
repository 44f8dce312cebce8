"""Real Ray nodes on this machine for the tests and the benchmarks: a head on free loopback
ports with token authentication on (a token of their own, never the user's), and nodes that
join it with their own custom resources. Each stops only its own processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

REPO = Path(__file__).resolve().parents[1]


def own_cluster_token() -> None:
    """Give the tests' clusters a token of their own (`RAY_AUTH_TOKEN_PATH`, inherited by every
    node, CLI and job they start): `ray start --head` with token authentication on refuses to
    start on a machine without `~/.ray/auth_token`, and the user's own token is left alone."""
    import atexit
    import secrets

    folder = tempfile.mkdtemp(prefix="distillery-token-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "auth_token"
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
HEAD_RESOURCES = {"student_node": 2}  # the head doubles as the student node group of the two-node test


@contextlib.contextmanager
def local_cluster(cache: Path) -> Iterator[dict[str, str]]:
    """Start a head node on free loopback ports (token authentication on), connect to it and
    point the CLI at it; yield its addresses; stop it at the end: only its own processes, never
    another Ray on the machine."""
    gcs_port, dashboard_port = free_port(), free_port()
    head = RayNode(["--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                    "--num-cpus=2", f"--resources={json.dumps(HEAD_RESOURCES)}"], cache.parent / "ray-head.log")
    os.environ["DISTILLERY_CACHE_DIR"] = str(cache)  # the nodes' too: their mapped stores and fetched files
    head.start(lambda: _accepts(gcs_port))
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
    import ray

    try:
        ray.init(address=os.environ["RAY_ADDRESS"], namespace="distillery-tests")
        yield {"gcs": os.environ["RAY_ADDRESS"], "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    finally:
        ray.shutdown()
        head.stop()
        os.environ.pop("RAY_ADDRESS", None)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class RayNode:
    """One Ray node on this machine: Ray's `ray start ... --block` in its own process group
    (`harness/ray_node.py`, on loopback) and its own temporary folder (its sessions, sockets and
    `ray_current_cluster`: nothing left in /tmp/ray for another Ray to find), with the
    credentials of the tests' S3-compatible server as a cloud cluster's nodes carry their own.
    `stop()` takes down this node's processes only, as a node that leaves the cluster: SIGTERM
    to its `ray start`, which drains the node and stops what it started; then its folder goes."""

    def __init__(self, args: list[str], log_path: Path):
        self.args, self.log_path, self.proc = args, log_path, None
        self.temp_dir: Optional[str] = None

    def start(self, ready: Callable[[], Any], timeout: float = 180) -> Any:
        env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1", **S3_CREDENTIALS}
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.ray_node", "start", *self.args, "--block", "--node-ip-address=127.0.0.1",
                 f"--temp-dir={self.temp_dir}", "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = ready()
            if value:
                return value
            assert self.proc.poll() is None, f"the Ray node exited: {self.log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"the Ray node was not ready within {timeout:g}s: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):  # anything of this node's group still running
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            shutil.rmtree(self.temp_dir, ignore_errors=True)


class WorkerNode(RayNode):
    """A second node joined to the cluster at `gcs`, carrying the custom `resources`."""

    def __init__(self, gcs: str, resources: dict[str, float], log_path: Path, num_cpus: int = 1):
        super().__init__([f"--address={gcs}", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}"],
                         log_path)

    def start(self, timeout: float = 120) -> str:
        """Start the node; return its node id once the cluster lists it alive."""
        import ray

        known = {n["NodeID"] for n in ray.nodes()}
        return super().start(lambda: next((n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] not in known),
                                          None), timeout)
