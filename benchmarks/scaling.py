"""Student throughput as a served teacher gets more replicas, fixed or autoscaled.

    python -m benchmarks.scaling [--forward-ms 40] [--repeats 3] [--seconds 10]

Two CPU cores cannot hold four GPU teachers, so the teacher here stands in for one: a real
Serve teacher deployment (`teachers.deployment`) whose module sleeps `--forward-ms` per
forward without using the CPU, one forward at a time per replica, as a GPU runs them. Students
are Ray actors with the real `TeacherClient` (prefetch, one batch per request) and a student
step that also sleeps (`--step-ms`), so that the students are not the bottleneck. Each arm
(1, 2 and 4 replicas, and Serve autoscaling from 1 to 4) runs with 1 and 2 students, the arms
back to back within each repeat. Reported: student samples/s (median, min, max over the
repeats), the scaling efficiency against linear (samples/s with k replicas over k times one
replica's, per repeat, then the median), and autoscaling's samples/s over the best fixed
count's once its replicas settled, with the time they took to settle.
Results go to `benchmarks/results/scaling.{md,json}`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cluster.ray_env import prepare_ray_env

RESULTS = Path(__file__).parent / "results"
IN_FEATURES, CLASSES, BATCH = 64, 10, 64
FIXED = (1, 2, 4)
AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2, "upscale_delay_s": 2,
               "downscale_delay_s": 600}


class SleepyTeacher(torch.nn.Module):
    """A linear classifier whose forward also waits `forward_ms` without using the CPU: a GPU
    forward as seen from the host."""

    def __init__(self, in_features: int, num_classes: int, forward_ms: float = 40.0):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, num_classes)
        self.forward_s = forward_ms / 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.forward_s)
        return self.linear(x)


def sleepy_teacher(in_features: int, num_classes: int, forward_ms: float = 40.0) -> torch.nn.Module:
    return SleepyTeacher(in_features, num_classes, forward_ms)


def _deploy(forward_ms: float, folder: Path, replicas: int | None) -> dict[str, Any]:
    """The teacher app with a fixed count (`replicas`) or autoscaling (None); returns its describe()."""
    from ray import serve
    from safetensors.torch import save_model

    from cluster import ResourcesConfig
    from teachers import app_name
    from teachers.deployment import build_teacher_app
    from teachers.loaded import TeacherAppArgs

    kwargs = {"in_features": IN_FEATURES, "num_classes": CLASSES, "forward_ms": forward_ms}
    weights = folder / "sleepy.safetensors"
    torch.manual_seed(0)
    save_model(sleepy_teacher(**kwargs), str(weights))
    resources = ResourcesConfig.model_validate(
        {"num_cpus": 0, "max_ongoing_requests": 8,
         **({"replicas": replicas} if replicas else {"autoscaling": AUTOSCALING})})
    args = TeacherAppArgs(name="sleepy", factory="benchmarks.scaling:sleepy_teacher", kwargs=kwargs,
                          allowed_modules=["benchmarks.scaling"], weights_path=str(weights), in_features=IN_FEATURES,
                          temperature=1.0, resources=resources)
    serve.run(build_teacher_app(args), name=app_name("sleepy"), route_prefix=None)
    return serve.get_app_handle(app_name("sleepy")).describe.remote().result(timeout_s=120)


def _replicas() -> int:
    from teachers import app_name
    from teachers.deployment import running_replicas

    return running_replicas({"sleepy": app_name("sleepy")})["sleepy"]


class Student:
    """One student: asks the served teacher for every batch, `prefetch` ahead, and takes a
    `step_ms` step on each batch's soft targets."""

    def run(self, info: dict[str, Any], student: int, seconds: float, warmup_s: float, prefetch: int,
            step_ms: float) -> dict[str, float]:
        import numpy as np

        from ingest.batches import Batch
        from students.run_control import LocalRunControl
        from teachers.client import TeacherClient
        from teachers.teacher_set import TeacherEntry, TeacherSet

        entry = TeacherEntry("sleepy", 1.0, info["output_space"], info["num_classes"], info["model_version"])
        client = TeacherClient(LocalRunControl(TeacherSet().with_teacher(entry)), output_space=info["output_space"],
                               temperature=1.0, prefetch=prefetch, batches_per_request=1, timeout_s=60,
                               dense_max_classes=1024)
        x = np.random.default_rng(student).random((BATCH, IN_FEATURES), dtype=np.float32)
        batch = lambda n: Batch.of_inputs(f"s{student}-b{n}", x)  # noqa: E731
        client.plan(batch(n) for n in itertools.count())
        start = time.perf_counter()
        counted, counted_from = 0, None
        for n in itertools.count():
            client.targets_for(batch(n))
            time.sleep(step_ms / 1000)
            now = time.perf_counter()
            if counted_from is None and now - start >= warmup_s:
                counted_from = now
            elif counted_from is not None:
                counted += 1
                if now - counted_from >= seconds:
                    break
        client.close()
        return {"samples_per_s": counted * BATCH / (time.perf_counter() - counted_from)}


def _settled_at(trace: list[tuple[float, int]]) -> float:
    """The time from which the replica count stayed at its last value."""
    settled = trace[-1][0]
    for at, count in reversed(trace):
        if count != trace[-1][1]:
            break
        settled = at
    return settled


def _arm(forward_ms: float, folder: Path, replicas: int | None, students: int, args: argparse.Namespace
         ) -> dict[str, float]:
    import ray
    from ray import serve

    from teachers import app_name

    info = _deploy(forward_ms, folder, replicas)
    warmup_s, settled_s = 2.0, 0.0
    if replicas is None:  # let Serve's autoscaler settle under the students' load before counting
        warmup_s = args.autoscale_warmup_s
    actors = [ray.remote(Student).options(num_cpus=0).remote() for _ in range(students)]
    runs = [a.run.remote(info, i, args.seconds, warmup_s, args.prefetch, args.step_ms) for i, a in enumerate(actors)]
    if replicas is None:  # when the count reached the one it ends the warm-up with
        start, trace = time.monotonic(), []
        while time.monotonic() - start < warmup_s:
            trace.append((time.monotonic() - start, _replicas()))
            time.sleep(0.25)
        settled_s = _settled_at(trace)
    done = ray.get(runs)
    out = {"samples_per_s": sum(d["samples_per_s"] for d in done), "replicas": _replicas(),
           "settled_s": round(settled_s, 1)}
    for a in actors:
        ray.kill(a)
    serve.delete(app_name("sleepy"))
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> None:
    prepare_ray_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward-ms", type=float, default=40.0, help="the stand-in teacher's forward time")
    parser.add_argument("--step-ms", type=float, default=2.0, help="the students' step time")
    parser.add_argument("--prefetch", type=int, default=12, help="batches each student asks for ahead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="counted time per arm")
    parser.add_argument("--autoscale-warmup-s", type=float, default=30.0,
                        help="load before counting the autoscaled arm (its replicas settle in about 16 s here)")
    args = parser.parse_args(argv)

    import tempfile

    from ray import serve

    from benchmarks.machine import describe_machine
    from cluster.connection import connect

    print(f"connected to {connect()}")
    serve.start(http_options={"host": "127.0.0.1"})
    arms = [(f"{r} replica{'s' if r > 1 else ''}", r) for r in FIXED] + [("autoscaling 1-4", None)]
    samples: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="distillery-scaling-") as folder:
        for repeat in range(args.repeats):
            for students in (1, 2):
                for label, replicas in arms:
                    figures = _arm(args.forward_ms, Path(folder), replicas, students, args)
                    samples.setdefault(f"{students}|{label}", []).append(figures)
                    print(f"repeat {repeat}, {students} student(s), {label}: {figures}")
    result = {"machine": describe_machine(), "forward_ms": args.forward_ms, "step_ms": args.step_ms,
              "prefetch": args.prefetch, "repeats": args.repeats, "seconds": args.seconds,
              "batch": BATCH, "autoscaling": AUTOSCALING, "arms": _summary(samples, arms, args.repeats)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=2))
    table = render(result)
    (RESULTS / "scaling.md").write_text(table)
    print(table)


def _summary(samples: dict[str, list[dict]], arms: list[tuple[str, Any]], repeats: int) -> list[dict]:
    out = []
    for students in (1, 2):
        one = [samples[f"{students}|1 replica"][i]["samples_per_s"] for i in range(repeats)]
        best = [max(samples[f"{students}|{label}"][i]["samples_per_s"] for label, r in arms if r) for i in range(repeats)]
        for label, replicas in arms:
            runs = samples[f"{students}|{label}"]
            rate = [r["samples_per_s"] for r in runs]
            row = {"students": students, "arm": label, "samples_per_s": _spread(rate),
                   "replicas_at_end": [r["replicas"] for r in runs]}
            if replicas:
                row["efficiency"] = _spread([rate[i] / (replicas * one[i]) for i in range(repeats)])
            else:
                row["of_best_fixed"] = _spread([rate[i] / best[i] for i in range(repeats)])
                row["settled_s"] = [r["settled_s"] for r in runs]
            out.append(row)
    return out


def render(result: dict) -> str:
    def spread(s: dict, digits: int = 2) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f} to {s['max']:.{digits}f})"

    lines = ["# Scaling benchmark: teacher replicas, fixed and autoscaled", "",
             f"Machine: {result['machine']}. A served teacher whose forward waits {result['forward_ms']:g} ms "
             f"without the CPU (one forward at a time per replica), students stepping {result['step_ms']:g} ms a "
             f"batch of {result['batch']}, prefetch {result['prefetch']}, one batch per request; "
             f"{result['repeats']} repeats of {result['seconds']:g} s per arm, arms back to back in each repeat. "
             f"Autoscaling: {result['autoscaling']}.", "",
             "| students | teacher replicas | samples/s | vs linear (k x 1 replica) | replicas at the end |",
             "|---|---|---|---|---|"]
    for row in result["arms"]:
        if "efficiency" in row:
            versus = spread(row["efficiency"])
        else:
            versus = (f"{spread(row['of_best_fixed'])} of the best fixed count, settled in "
                      f"{', '.join(f'{s:g}' for s in row['settled_s'])} s")
        lines.append(f"| {row['students']} | {row['arm']} | {spread(row['samples_per_s'], 0)} | {versus} | "
                     f"{', '.join(str(r) for r in row['replicas_at_end'])} |")
    lines += ["", "Medians of the per-repeat figures, with their min and max. Efficiency: samples/s with k "
              "replicas over k times the same repeat's 1-replica samples/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
