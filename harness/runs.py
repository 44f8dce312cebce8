"""`distillery` commands run as a user runs them (real processes, the repository as their
working folder), against the cluster that `RAY_ADDRESS` names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.ray_nodes import REPO


def distillery(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `distillery` CLI as a user would, against the session's cluster."""
    return subprocess.run([sys.executable, "-m", "orchestration", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)



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
