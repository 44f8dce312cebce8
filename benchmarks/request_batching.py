"""Two students on one teacher replica: requests that share forwards against one forward each.

    python -m benchmarks.request_batching [--requests 4] [--sequences 4] [--length 128] [--repeats 3]

A real Serve deployment of SmolLM2-135M-Instruct (`teachers.deployment`, one replica, one CPU,
`distillery warmup` converts the model) twice: with request batching (`teachers.request_batching`,
the default) and without. Two students (threads of the driver) each keep two requests in
flight, `--requests` requests each of `--sequences` packed sequences of `--length` tokens,
top-64 records. The arms run back to back within each repeat (order alternating). Reported:
target tokens per second of each arm, the median of the per-repeat ratios batched / unbatched
with min and max, and whether both arms sent the same records for the same batches (top-k ids
equal, log-probabilities within float16 rounding). Results go to
`benchmarks/results/request_batching.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.teacher_scoring import TOP_K, lm_teacher_args, token_inputs
from cluster.ray_env import prepare_ray_env

RESULTS = Path(__file__).parent / "results"
ARMS = {"batched": True, "unbatched": False}
IN_FLIGHT = 2


def _deploy(batched: bool, args: argparse.Namespace) -> str:
    from ray import serve

    from cluster import ResourcesConfig
    from ingest import SMOLLM2
    from teachers.deployment import build_teacher_app
    from teachers.request_batching import RequestBatchingConfig

    name = f"bench-{'batched' if batched else 'unbatched'}"
    teacher = lm_teacher_args(name.replace("-", "_"), args.lm or SMOLLM2, args.random_weights, args.dtype,
                              resources=ResourcesConfig(num_cpus=1, num_gpus=args.gpus),
                              batching=RequestBatchingConfig(enabled=batched))
    serve.run(build_teacher_app(teacher), name=name, route_prefix=None)
    return name


def _student(handle, student: int, requests: list[np.ndarray]) -> dict[str, object]:
    """Send `requests` keeping IN_FLIGHT outstanding; the records by batch id."""
    records, pending = {}, []
    for i, inputs in enumerate(requests):
        payload = {"batches": [{"batch_id": f"student{student}/e0/b{i}", "inputs": inputs}], "temperature": 1.0,
                   "top_k": TOP_K, "dense_max_classes": 1024, "target_kind": "topk"}
        pending.append(handle.remote(payload))
        if len(pending) >= IN_FLIGHT:
            for record in pending.pop(0).result(timeout_s=600):
                records[str(record.batch_id)] = record
    for response in pending:
        for record in response.result(timeout_s=600):
            records[str(record.batch_id)] = record
    return records


def _arm(app: str, work: list[list[np.ndarray]]) -> tuple[float, dict]:
    from ray import serve

    handle = serve.get_app_handle(app)
    start = time.perf_counter()
    with ThreadPoolExecutor(len(work)) as pool:
        answers = list(pool.map(lambda s: _student(handle, s, work[s]), range(len(work))))
    seconds = time.perf_counter() - start
    return seconds, {batch: record for answer in answers for batch, record in answer.items()}


def _same_records(a: dict, b: dict) -> dict[str, float]:
    ids = np.concatenate([a[k].topk_idx == b[k].topk_idx for k in a]).mean()
    diff = max(float(np.abs(a[k].topk_logprob.astype(np.float32) - b[k].topk_logprob.astype(np.float32)).max())
               for k in a)
    return {"equal_ids": float(ids), "max_logprob_diff": diff}


def main(argv: list[str] | None = None) -> None:
    prepare_ray_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4, help="requests per student per arm")
    parser.add_argument("--sequences", type=int, default=4, help="sequences per request")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="request_batching")
    parser.add_argument("--lm", default=None, help="the language model (default: SmolLM2-135M-Instruct's GGUF)")
    parser.add_argument("--random-weights", action="store_true", help="its architecture with random weights")
    parser.add_argument("--dtype", default="float32", help="the teacher's dtype (bfloat16 on a GPU)")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per replica (0.5: both arms on one GPU)")
    args = parser.parse_args(argv)
    from ray import serve

    from benchmarks.machine import describe_machine
    from cluster.connection import connect
    from ingest.token_layout import targets_per_sequence

    print(f"connected to {connect()}")
    serve.start(http_options={"host": "127.0.0.1"})
    apps = {arm: _deploy(batched, args) for arm, batched in ARMS.items()}
    inputs = token_inputs(2 * args.requests * args.sequences, args.length, 49_152)
    work = [[inputs[(s * args.requests + i) * args.sequences:][:args.sequences] for i in range(args.requests)]
            for s in range(2)]
    tokens = int(targets_per_sequence(inputs).sum())
    for app in apps.values():  # warm-up: the first forward of each replica
        _arm(app, [work[0][:1]])
    samples, checks = [], []
    for repeat in range(args.repeats):
        order = list(apps) if repeat % 2 == 0 else list(apps)[::-1]
        seconds, records = {}, {}
        for arm in order:
            seconds[arm], records[arm] = _arm(apps[arm], work)
        samples.append(seconds)
        checks.append(_same_records(records["batched"], records["unbatched"]))
        print(f"repeat {repeat}: {seconds} {checks[-1]}", flush=True)
    for app in apps.values():
        serve.delete(app)
    ratios = [s["unbatched"] / s["batched"] for s in samples]
    result = {"machine": describe_machine(), "device": "cuda" if args.gpus else "cpu", "dtype": args.dtype,
              "lm": args.lm or "SmolLM2-135M-Instruct", "random_weights": args.random_weights,
              "requests_per_student": args.requests, "sequences": args.sequences,
              "length": args.length, "repeats": args.repeats, "target_tokens": tokens, "samples": samples,
              "tokens_per_s": {arm: statistics.median(tokens / s[arm] for s in samples) for arm in apps},
              "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
              "records": {"equal_ids": min(c["equal_ids"] for c in checks),
                          "max_logprob_diff": max(c["max_logprob_diff"] for c in checks)}}
    write(result, args.name)


def write(result: dict, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    speed, same = result["speedup"], result["records"]
    lines = ["# Request batching: two students on one teacher replica", "",
             f"Machine: {result['machine']}. {result['lm']}{' (random weights)' if result['random_weights'] else ''} "
             f"in {result['dtype']} served by one replica ({result['device']}); two students, "
             f"two requests in flight each, {result['requests_per_student']} requests each of "
             f"{result['sequences']} sequences of {result['length']} tokens, top-64 records; "
             f"{result['repeats']} repeats, arms back to back. `python -m benchmarks.request_batching`.", "",
             "| arm | target tokens per second (median) |", "|---|---|",
             *[f"| {arm} | {rate:,.0f} |" for arm, rate in result["tokens_per_s"].items()], "",
             f"Batched over unbatched: {speed['median']:.2f}x (min {speed['min']:.2f}, max {speed['max']:.2f}), "
             f"median of the per-repeat ratios. Records: {100 * same['equal_ids']:.2f} % of top-k ids equal, "
             f"log-probabilities within {same['max_logprob_diff']:.2g}."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
