"""The check of a streamed split before training: the driver's pool of processes as it was
before the check ran on the cluster, against Ray tasks (`ingest.cluster_scan`), in one run.

    python -m benchmarks.scan [--kind lm|classes] [--files 8] [--rows 10000] [--repeats 3]
                              [--before REV] [--memory-rows 1000000,10000000]

Writes `--files` files into a temporary folder, a streamed source with a 5 % held-out test
share: `lm`, JSONL prompt/completion rows (the standard library's functions, repeated, each row
with its own id), tokenized with the default tokenizer at sequence length 128; `classes`,
Parquet rows of 64 float features, a label of 10 classes and an id. `--before REV` (default
`c1cdd55`, the last commit with the driver's per-row check) is checked out in a temporary git
worktree. Each repeat runs the arms back to back, each a driver's `load_dataset` in a process of
its own, the order alternating:
- "before": REV's check, a pool of as many processes as the machine has cores, an empty cache;
- "cluster": this tree's, Ray tasks on a local Ray cluster started for the benchmark (token
  authentication on, the machine's cores), an empty cache on its node (time after connecting);
- "cluster, cached": again on the same node's cache (every file checked before).
Reported: seconds per arm (median) and the median of the per-repeat ratios against "before",
with their min and max. `--memory-rows`: classifier splits of these many rows (8 features, a
separate test file, 1M rows a file), each arm once, with the driver process's peak resident
memory. Results go to `benchmarks/results/scan-{kind}.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
ARMS = ("before", "cluster", "cluster, cached")
BEFORE = "c1cdd55"


def write_corpus(folder: Path, files: int, rows: int) -> str:
    from ingest.lm_data import function_examples

    functions = function_examples()["train"]
    for part in range(files):
        with open(folder / f"part-{part:03d}.jsonl", "w") as out:
            for i in range(rows):
                prompt, completion = functions[(part * rows + i) % len(functions)]
                out.write(json.dumps({"id": f"{part}-{i}", "prompt": prompt, "completion": completion}) + "\n")
    return str(folder / "part-*.jsonl")


def write_table(folder: Path, files: int, rows: int, features: int = 64, prefix: str = "part") -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for part in range(files):
        x = rng.normal(size=(rows, features)).astype(np.float32)
        pq.write_table(pa.table({"id": [f"{prefix}{part}-{i}" for i in range(rows)],
                                 "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), features),
                                 "y": rng.integers(0, 10, rows)}), folder / f"{prefix}-{part:03d}.parquet")
    return str(folder / f"{prefix}-*.parquet")


def data_config(kind: str, train: str, workers: int, test: str | None = None) -> dict[str, Any]:
    from ingest.lm_data import DEFAULT_TOKENIZER

    split = {"test": test} if test else {"test_fraction": 0.05}
    if kind == "classes":
        return {"source": {"format": "parquet", "train": train, **split, "stream": True,
                           "scan_workers": workers, "columns": {"input": "x", "label": "y", "id": "id"}}}
    return {"tokenizer": DEFAULT_TOKENIZER, "sequence_length": 128,
            "source": {"format": "jsonl", "train": train, **split, "stream": True, "scan_workers": workers,
                       "columns": {"prompt": "prompt", "completion": "completion", "id": "id"}}}


def run_arm(config: dict[str, Any], on_ray: bool) -> dict[str, Any]:
    """A driver's start: the dataset of `config`, in this process (connected to `RAY_ADDRESS`
    first with `on_ray`; the time counts from there)."""
    if on_ray:
        from cluster import connect

        connect(start_local=False)
    from ingest.config import DataConfig
    from ingest.loading import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(DataConfig.model_validate(config))
    return {"seconds": time.perf_counter() - start, "rows": dataset.streamed.rows, "test_rows": len(dataset.test.x),
            "fingerprint": dataset.fingerprint}


def _arm_in_process(config: dict[str, Any], cache: Path, tree: Path, ray_address: str | None) -> dict[str, Any]:
    """One arm in a process of its own, in `tree` (this one or the `--before` worktree); its
    result and its peak resident memory (MiB)."""
    env = {**os.environ, "DISTILLERY_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "benchmarks.scan", "--arm", json.dumps(config)]
    if ray_address:
        env["RAY_ADDRESS"], args = ray_address, args + ["--on-ray"]
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"arm failed in {tree}: {proc.stderr.read()[-3000:]}")
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    return {**result, "peak_mib": usage.ru_maxrss / 1024}


def _worktree(temp: Path, rev: str) -> Path:
    tree = temp / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)
    return tree


def _repeats(args: Any, temp: Path, before: Path, ray: dict[str, str], cluster_cache: Path) -> list[dict]:
    cores = os.cpu_count() or 1
    train = (write_corpus if args.kind == "lm" else write_table)(temp, args.files, args.rows)
    samples = []
    for repeat in range(args.repeats):
        before_cache = temp / "cache-before"
        shutil.rmtree(before_cache, ignore_errors=True)
        shutil.rmtree(cluster_cache / "scans", ignore_errors=True)
        order = ARMS if repeat % 2 == 0 else ("cluster", "cluster, cached", "before")
        sample = {}
        for arm in order:
            config = data_config(args.kind, train, cores)
            sample[arm] = (_arm_in_process(config, before_cache, before, None) if arm == "before" else
                           _arm_in_process(config, cluster_cache, REPO, ray["gcs"]))
        totals = {s["rows"] + s["test_rows"] for s in sample.values()}
        if len(totals) != 1 or sample["cluster"]["fingerprint"] != sample["cluster, cached"]["fingerprint"]:
            raise RuntimeError(f"the arms disagree on the split: {sample}")
        samples.append(sample)
        print(f"repeat {repeat}: { {arm: round(s['seconds'], 2) for arm, s in sample.items()} }", flush=True)
    return samples


def _memory(rows_list: list[int], temp: Path, before: Path, ray: dict[str, str], cluster_cache: Path) -> list[dict]:
    out = []
    for rows in rows_list:
        folder = temp / f"memory-{rows}"
        folder.mkdir()
        per_file = min(rows, 1_000_000)
        train = write_table(folder, max(1, rows // per_file), per_file, features=8)
        test = write_table(folder, 1, 20_000, features=8, prefix="test")
        config = data_config("classes", train, os.cpu_count() or 1, test=test)
        shutil.rmtree(cluster_cache / "scans", ignore_errors=True)
        arms = {"before": _arm_in_process(config, temp / f"cache-memory-{rows}", before, None),
                "cluster": _arm_in_process(config, cluster_cache, REPO, ray["gcs"])}
        out.append({"rows": rows, **{arm: {"seconds": r["seconds"], "peak_mib": r["peak_mib"]} for arm, r in arms.items()}})
        print(f"memory, {rows:,} rows: { {arm: round(r['peak_mib']) for arm, r in arms.items()} } MiB", flush=True)
        shutil.rmtree(folder)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("lm", "classes"), default="lm")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--memory-rows", default="", help="comma-separated split sizes, e.g. 1000000,10000000")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one arm's data config, run in this process
    parser.add_argument("--on-ray", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(json.loads(args.arm), args.on_ray)))
        return
    from benchmarks.machine import describe_machine
    from cluster.ray_env import prepare_ray_env

    prepare_ray_env()
    from harness.ray_nodes import local_cluster, own_cluster_token

    own_cluster_token()
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as name:
        temp = Path(name)
        before = _worktree(temp, args.before)
        try:
            cluster_cache = temp / "cluster-cache"
            with local_cluster(cluster_cache) as ray:
                samples = _repeats(args, temp, before, ray, cluster_cache)
                megabytes = sum(p.stat().st_size for p in temp.glob("part-*")) / 2**20
                memory = _memory([int(r) for r in args.memory_rows.split(",") if r], temp, before, ray, cluster_cache)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    speed = {arm: [s["before"]["seconds"] / s[arm]["seconds"] for s in samples] for arm in ARMS[1:]}
    result = {"machine": describe_machine(), "kind": args.kind, "files": args.files, "rows_per_file": args.rows,
              "megabytes": megabytes, "repeats": args.repeats, "cores": os.cpu_count() or 1, "before": args.before,
              "rows": samples[0]["cluster"]["rows"],
              "seconds": {arm: statistics.median(s[arm]["seconds"] for s in samples) for arm in ARMS},
              "speedup": {arm: {"median": statistics.median(v), "min": min(v), "max": max(v)} for arm, v in speed.items()},
              "memory": memory, "samples": samples}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scan-{args.kind}.json").write_text(json.dumps(result, indent=2))
    table = render(result)
    (RESULTS / f"scan-{args.kind}.md").write_text(table)
    print(table)


def render(result: dict[str, Any]) -> str:
    what = ("JSONL files of {:,} prompt/completion rows" if result["kind"] == "lm" else
            "Parquet files of {:,} rows (64 float features, a label, an id)").format(result["rows_per_file"])
    lines = [f"# The check of a streamed split ({result['kind']})", "",
             f"Machine: {result['machine']}. {result['files']} {what} ({result['megabytes']:.0f} MB; {result['rows']:,} "
             f"training rows after a 5 % held-out test share"
             + ("; the default tokenizer, sequence length 128" if result["kind"] == "lm" else "")
             + f"); {result['repeats']} repeats, each arm a driver's `load_dataset` in its own process, back to back; "
               f"`before` is commit {result['before']}.", "",
             "| arm | seconds (median) | speed against before (median of the per-repeat ratios, min, max) |",
             "|---|---:|---|"]
    labels = {"before": f"before: the driver's pool of {result['cores']} processes, cold cache",
              "cluster": f"Ray tasks on a local cluster ({result['cores']} CPUs), cold cache",
              "cluster, cached": "Ray tasks, every file in the node's cache"}
    for arm in ARMS:
        ratio = result["speedup"].get(arm)
        shown = f"{ratio['median']:.2f}x ({ratio['min']:.2f}, {ratio['max']:.2f})" if ratio else "1"
        lines.append(f"| {labels[arm]} | {result['seconds'][arm]:.1f} | {shown} |")
    if result["memory"]:
        lines += ["", "The driver's peak resident memory (one run each; classifier splits of 8 float features in "
                      "files of 1M rows, a separate test file of 20,000 rows):", "",
                  "| training rows | before: MiB (seconds) | Ray tasks: MiB (seconds) |", "|---:|---:|---:|"]
        for m in result["memory"]:
            lines.append(f"| {m['rows']:,} | {m['before']['peak_mib']:.1f} ({m['before']['seconds']:.1f}) | "
                         f"{m['cluster']['peak_mib']:.1f} ({m['cluster']['seconds']:.1f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
