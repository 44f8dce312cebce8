"""One real local Ray cluster (`ray start --head`, loopback, token auth on) for the session.

Every integration test talks to it through `RAY_ADDRESS`; runs are real `distillery`
processes, so the tests exercise the same code path a user's shell does. The nodes and the
run processes live in `harness/`, which the benchmarks share.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.ray_env import prepare_ray_env

prepare_ray_env()  # before anything imports ray

from harness.ray_nodes import (HEAD_RESOURCES, REPO, S3_CREDENTIALS, RayNode, WorkerNode,  # noqa: E402,F401
                               free_port, local_cluster, own_cluster_token)
from harness.runs import RunProcess, distillery  # noqa: E402,F401

own_cluster_token()

CONFIGS = Path(__file__).parent / "integration" / "configs"


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    with local_cluster(tmp_path_factory.mktemp("cache")) as addresses:
        yield addresses


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
