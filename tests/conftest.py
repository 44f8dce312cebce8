"""One real local Ray cluster (`ray start --head`, loopback, token auth on) for the session.

Every integration test talks to it through `RAY_ADDRESS`; runs are real `distillery`
processes, so the tests exercise the same code path a user's shell does.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from cluster.ray_env import prepare_ray_env

prepare_ray_env()  # before anything imports ray


def _own_cluster_token() -> None:
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


_own_cluster_token()

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "integration" / "configs"


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
    (`tests/ray_node.py`, on loopback) and its own temporary folder (its sessions, sockets and
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
                [sys.executable, "-m", "tests.ray_node", "start", *self.args, "--block", "--node-ip-address=127.0.0.1",
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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    with local_cluster(tmp_path_factory.mktemp("cache")) as addresses:
        yield addresses


def distillery(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `distillery` CLI as a user would, against the session's cluster."""
    return subprocess.run([sys.executable, "-m", "orchestration", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


# What Ray's, Serve's, Train's and DeepSpeed's output looks like on a driver's console
RAY_OUTPUT = ("INFO worker.py", "(RayTrainWorker", "(TrainController", "(ServeController", "(ServeReplica", "(pid=",
              "TrainingReport", "Checkpoint successfully created", "core_worker", "DeprecationWarning", "[DeepSpeed]",
              "deepspeed.", "UserWarning")


def terminal_env() -> list[str]:
    """tmux `-e` options that give a new pane the session cluster's address, token and caches
    (a tmux server started earlier would not have them in its environment)."""
    keys = ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "DISTILLERY_CACHE_DIR", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return [arg for key in keys if key in os.environ for arg in ("-e", f"{key}={os.environ[key]}")] + \
        ["-e", "RAY_AUTH_MODE=token"]


def distillery_in_terminal(*args: str, timeout: float = 600) -> tuple[int, str]:
    """Run the `distillery` CLI in a real terminal (a tmux pane, 200 columns) against the
    session's cluster; return its exit code and everything it drew on the screen."""
    import shlex

    session = f"cli-{os.getpid()}-{time.monotonic_ns()}"
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "orchestration", *args))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", str(REPO),
                    *terminal_env(), f"{command}; echo EXIT=$?; sleep 600"], check=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", session],
                                    capture_output=True, text=True).stdout  # the scrollback too
            done = re.search(r"^EXIT=(\d+)$", screen, re.M)
            if done:
                return int(done.group(1)), screen
            assert time.monotonic() < deadline, f"timed out; the screen:\n{screen[-4000:]}"
            time.sleep(1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def own_digits(folder: Path) -> dict[str, str]:
    """Write the digits as a user's Parquet files (`deploy/examples/write_own_digits.py`) into
    `folder`; the `--set` values that point `deploy/configs/own_data.yaml` at them."""
    written = subprocess.run([sys.executable, "deploy/examples/write_own_digits.py", "--out", str(folder)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    return {f"data.source.{split}": f"{folder}/{split}.parquet" for split in ("train", "test", "transfer")}


class Background:
    """A long-running CLI command (`distillery teacher serve`), stopped with SIGTERM."""

    def __init__(self, log_path: Path, *args: str):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestration", *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def wait_for_line(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"no line with {text!r}:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log.close()


class RunProcess:
    """A `distillery run` in the background, its output in a log file."""

    def __init__(self, config: Path, run_name: str, output_dir: Path, extra_args: tuple[str, ...] = (),
                 output_uri: str | None = None):
        """`output_uri`: the run's `--output-dir` on object storage (its log stays in `output_dir`;
        `run_dir` is then the driver's working copy of the run's files)."""
        from cluster import RunFolder, default_cache_dir

        self.run_name, self.run_dir = run_name, output_dir / run_name
        self.output = output_uri or str(output_dir)
        if output_uri:
            self.run_dir = RunFolder(output_uri, run_name, default_cache_dir()).local
        self.log_path = output_dir / f"{run_name}.log"
        output_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestration", "run", str(config), "--run-name", run_name,
             "--output-dir", output_uri or str(output_dir), *extra_args], stdout=self._log, stderr=subprocess.STDOUT,
            cwd=REPO, start_new_session=True)

    def log(self) -> str:
        """What the run printed, then Ray's, Serve's, Train's and DeepSpeed's output from its
        `logs/run.log` (a quiet console sends them there)."""
        ray_log = self.run_dir / "logs" / "run.log"
        return self.log_path.read_text() + (ray_log.read_text(errors="replace") if ray_log.is_file() else "")

    def audit(self) -> dict:
        """`distillery audit --json` of this run: what its processes' audit files say, read by
        the command a user runs (exit code 1 when a batch was not applied exactly once)."""
        audited = distillery("audit", "--run", self.run_name, "--output-dir", self.output, "--json")
        assert audited.returncode in (0, 1), audited.stdout + audited.stderr
        return json.loads(audited.stdout)

    def metrics(self) -> list[dict]:
        """The run's metric records so far; a last line the driver is still writing is left for
        the next look (every other line must parse)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        text = path.read_text()
        complete = text if text.endswith("\n") else text.rpartition("\n")[0]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def wait_for(self, predicate, what: str, timeout: float = 240, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"run exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     f"{self.log()[-4000:]}")
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-4000:]}")

    def finish(self, timeout: float = 400) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """Kill the driver's whole process group, as a crash would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def s3_server(monkeypatch):
    """A real S3-compatible server (moto's standalone mode) on loopback, with a bucket
    `runs-data`: yields pyarrow's filesystem for it and the URI query options that reach it."""
    from pyarrow import fs

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the S3 server did not start"
                time.sleep(0.1)
        for key, value in S3_CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        s3 = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                             allow_bucket_creation=True)
        s3.create_dir("runs-data")
        yield s3, f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.terminate()
        server.wait(timeout=30)
