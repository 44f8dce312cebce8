"""How long `distillery teacher add` takes, from the command to the first training record that
uses the new teacher, stage by stage, with the teacher's weights already cached.

    python -m benchmarks.teacher_add [--repeats 5]

Starts a Ray head on loopback (its own temporary folder and cluster token; stopped at the end,
nothing else), a KD run long enough to outlast the repeats, and adds `tests/integration/configs/
teachers/quick_mlp.yaml` once to train and cache it (not counted). Each repeat then runs the CLI as a
user would, `teacher add` (its stages: connecting, weights, Serve deployment, output-space
check, until a train worker's record names the teacher) and `teacher remove`. Reported: the
median, min and max over the repeats of each stage and of the whole command's wall time.
Results go to `benchmarks/results/teacher_add.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CONFIG = REPO / "tests" / "reliability" / "configs" / "worker_kill.yaml"
TEACHER = REPO / "tests" / "integration" / "configs" / "teachers" / "quick_mlp.yaml"
RUN = "teacher-add-bench"
STAGE = re.compile(r"^(connected to run \S+|weights cached|weights trained|deployed|output space checked|"
                   r"in use by the train workers): ([\d.]+)s", re.M)


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _trained_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    steps = [0]
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("rank") == 0 and "step" in record and "event" not in record:
            steps.append(record["step"])
    return max(steps)


def _add(env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    added = _cli(env, "teacher", "add", "--run", RUN, str(TEACHER))
    wall = time.perf_counter() - start
    if added.returncode != 0 or "in use by the train workers" not in added.stdout:
        raise RuntimeError(f"teacher add failed:\n{added.stdout}\n{added.stderr[-3000:]}")
    stages = {name.split(" to run")[0]: float(seconds) for name, seconds in STAGE.findall(added.stdout)}
    removed = _cli(env, "teacher", "remove", "--run", RUN, "quick-mlp")
    if removed.returncode != 0:
        raise RuntimeError(f"teacher remove failed:\n{removed.stdout}\n{removed.stderr[-3000:]}")
    return {**stages, "wall": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from benchmarks.machine import describe_machine
    from harness.ray_nodes import free_port, own_cluster_token

    own_cluster_token()  # a token of the benchmark's own cluster, never the user's

    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as temp:
        port = free_port()
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
               "DISTILLERY_CACHE_DIR": os.environ.get("DISTILLERY_CACHE_DIR", str(Path(temp) / "cache"))}
        head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
                                 "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}",
                                 "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        run = None
        try:
            time.sleep(8)
            run = subprocess.Popen([sys.executable, "-m", "orchestration", "run", str(CONFIG), "--run-name", RUN,
                                    "--output-dir", str(Path(temp) / "runs"), "--set", "student.epochs=5000"],
                                   env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
            deadline = time.monotonic() + 300
            while _trained_steps(Path(temp) / "runs" / RUN) < 5:
                if time.monotonic() > deadline or run.poll() is not None:
                    raise RuntimeError("the run did not start training")
                time.sleep(1)
            print("warm-up (trains and caches the teacher):", _add(env))
            samples = []
            for repeat in range(args.repeats):
                samples.append(_add(env))
                print(f"repeat {repeat}: {samples[-1]}")
                time.sleep(2)
            _cli(env, "stop", "--run", RUN)
            run.wait(timeout=300)
        finally:
            if run is not None and run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
            head.terminate()
            try:
                head.wait(timeout=60)
            finally:
                os.killpg(head.pid, signal.SIGKILL) if head.poll() is None else None
    stages = list(samples[0])
    summary = {name: {"median": statistics.median(s[name] for s in samples), "min": min(s[name] for s in samples),
                      "max": max(s[name] for s in samples)} for name in stages}
    result = {"machine": describe_machine(), "repeats": args.repeats, "stages": summary, "samples": samples}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "teacher_add.json").write_text(json.dumps(result, indent=2))
    table = render(result)
    (RESULTS / "teacher_add.md").write_text(table)
    print(table)


LABELS = {"connected": "connect to the run (Ray client start, the orchestrator actor)",
          "weights cached": "find the cached weights", "deployed": "Serve deployment (a new replica process)",
          "output space checked": "ask the replica its output space, admit it",
          "in use by the train workers": "from the command to the first training record using it",
          "wall": "the whole command (Python start to exit)"}


def render(result: dict[str, Any]) -> str:
    lines = ["# `teacher add` of a cached teacher, stage by stage", "",
             f"Machine: {result['machine']}. {result['repeats']} repeats, each `teacher add` then `teacher remove` "
             f"of `quick_mlp.yaml` while a KD run (2 train workers) trains; seconds, median (min, max). The first "
             f"four lines are each stage's own time; the last two are totals, from the command's start and from "
             f"the Python process's start.", "", "| stage | seconds |", "|---|---|"]
    for name, figures in result["stages"].items():
        lines.append(f"| {LABELS.get(name, name)} | {figures['median']:.1f} ({figures['min']:.1f}, "
                     f"{figures['max']:.1f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
