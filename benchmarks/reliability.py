"""Faults survived, bad input refused, nothing lost: the figures of `tests/reliability/`.

    python -m benchmarks.reliability [--only teacher_faults,worker_kill,load,fuzz] [--fuzz-cases 10000]

Starts its own local Ray cluster on loopback (token authentication on), runs each fault
scenario of `harness/faults.py` on real processes, the load of 1, 2, 4 and 8
students on one teacher with Serve's queue limits, and the wire-payload fuzzing in a child
process; prints the figures and writes `benchmarks/results/reliability.{json,md}`. Stop
other Ray work on the machine first: the cluster is stopped with `ray stop --force`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe_machine

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("teacher_faults", "worker_kill", "load", "fuzz")


def run(only: tuple[str, ...], fuzz_cases: int) -> dict:
    from benchmarks.transport import fuzz
    from harness import faults
    from harness.ray_nodes import local_cluster, own_cluster_token

    own_cluster_token()

    result: dict = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d")}
    if "fuzz" in only:
        print(f"fuzzing {fuzz_cases} wire payloads...", flush=True)
        result["fuzz"] = fuzz(fuzz_cases, timeout_s=1200)
    cluster_scenarios = [s for s in only if s != "fuzz"]
    if not cluster_scenarios:
        return result
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    with tempfile.TemporaryDirectory(prefix="distillery-reliability-") as tmp:
        with local_cluster(Path(tmp) / "cache"):
            for name in cluster_scenarios:
                print(f"{name}...", flush=True)
                start = time.perf_counter()
                options = {"reference": True} if name == "worker_kill" else {}
                result[name] = getattr(faults, name)(Path(tmp) / name, **options)
                print(f"{name}: {time.perf_counter() - start:.0f}s {json.dumps(result[name])}", flush=True)
    return result


def render(result: dict) -> str:
    lines = [f"# Reliability ({result['machine']}, {result['date']})", "",
             "`python -m benchmarks.reliability`: real processes killed, stopped and deleted on a local Ray "
             "cluster; one run of each scenario.", ""]
    if "teacher_faults" in result:
        f = result["teacher_faults"]
        lines += ["## Teacher faults during one KD run (`tests/reliability/test_teacher_faults.py`)", "",
                  "| figure | value |", "|---|---:|",
                  f"| replica of mlp killed (SIGKILL): requests retried in the next 20 steps (rank 0) | "
                  f"{f['replica_kill_retries']} |",
                  f"| longest wait for mlp's soft targets in those steps (ms; the other replica answered) | "
                  f"{f['replica_kill_max_wait_ms']} |",
                  f"| requests retried over the run (rank 0) | {f['faults_retries']} |",
                  f"| cnn hung (SIGSTOP): seconds until it was dropped | {f['hung_teacher_dropped_after_s']} |",
                  f"| batches that went on without the late teacher (fallback) | {f['faults_fallback_batches']} "
                  f"of {f['steps']} ({f['faults_fallback_batches'] / max(f['steps'], 1):.1%}) |",
                  f"| teachers lost and dropped (rank 0) | {f['faults_teachers_lost']} |",
                  f"| mlp app deleted, no teacher left: steps trained while paused | {f['steps_while_no_teacher']} |",
                  f"| paused until a teacher was added (s, rank 0) | {f['faults_paused_s']:.1f} |",
                  f"| batches planned / lost / applied twice | {f['batches_planned']} / {f['batches_lost']} / "
                  f"{f['batches_applied_twice']} |", ""]
    if "worker_kill" in result:
        w = result["worker_kill"]
        lines += ["## Train worker killed, driver killed, newest checkpoint cut short (`test_worker_kill.py`)", "",
                  "| figure | value |", "|---|---:|",
                  f"| worker killed after step | {w['worker_killed_after_step']} |",
                  f"| worker group resumed from step (steps replayed) | {w['worker_restart_resumed_from_step']} "
                  f"({w['worker_restart_steps_replayed']}) |",
                  f"| seconds from the kill to the restarted group's first logged step | {w['worker_restart_recovery_s']} |",
                  f"| driver killed; Ray's latest checkpoint (step {w['latest_checkpoint_step']}) cut short: the rerun "
                  f"resumed from step (an older checkpoint: {w['driver_rerun_used_an_older_checkpoint']}) | "
                  f"{w['driver_rerun_resumed_from_step']} |",
                  f"| steps trained twice and compared / max loss difference | {w['steps_compared']} / "
                  f"{w['max_loss_difference']:.2e} |",
                  f"| the whole loss curve against an uninterrupted run (steps / max difference) | "
                  f"{w.get('uninterrupted_steps_compared')} / {w.get('uninterrupted_max_loss_difference', float('nan')):.2e} |",
                  f"| batches planned / lost / applied twice | {w['batches_planned']} / {w['batches_lost']} / "
                  f"{w['batches_applied_twice']} |", ""]
    if "load" in result:
        lines += ["## Students on one teacher (1 replica: 1 request at a time, at most 2 queued per caller; each "
                  "student keeps 8 requests in flight)", "",
                  "| students | batches | batches/s | p50 wait (ms) | p99 wait (ms) | back-pressure retries | "
                  "other retries | lost |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['students']} | {r['batches']} | {r['batches_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                  f"{r['backpressure_retries']} | {r['other_retries']} | {r['lost']} |" for r in result["load"]]
        lines.append("")
    if "fuzz" in result:
        z = result["fuzz"]
        lines += ["## Wire payloads fuzzed (a child process)", "",
                  "| cases | refused | accepted (valid) | failed | crashed | hung | slowest case (s) | peak RSS (MiB) | "
                  "RSS growth during the cases (MiB) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {z['cases']} | {z.get('refused')} | {z.get('accepted')} | {z.get('failed')} | {z['crashed']} | "
                  f"{z['hung']} | {z.get('slowest_case_s', float('nan')):.3f} | {z.get('peak_rss_mib', float('nan')):.0f} | "
                  f"{z.get('rss_growth_mib', float('nan')):.1f} |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--fuzz-cases", type=int, default=10_000)
    opts = parser.parse_args()
    only = tuple(s for s in opts.only.split(",") if s)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    result = run(only, opts.fuzz_cases)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "reliability.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
