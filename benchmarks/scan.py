"""The driver's check of a streamed split before training (`ingest.split_scan`): one process,
a pool of processes, and a start after one that checked the same files.

    python -m benchmarks.scan [--kind lm|classes] [--files 8] [--rows 10000] [--repeats 3]

Writes `--files` files into a temporary folder, a streamed source with a 5 % held-out test
share: `lm`, JSONL prompt/completion rows (the standard library's functions, repeated, each row
with its own id), tokenized with the default tokenizer at sequence length 128; `classes`,
Parquet rows of 64 float features, a label of 10 classes and an id. Each repeat runs the arms back to back, each in a process of its own (what a
driver does at its start, `load_dataset` of the run's data), the order alternating:
- "one process": `scan_workers: 1`, an empty cache;
- "pool": `scan_workers` = the machine's cores, an empty cache;
- "cached": a second start on the pool arm's cache (every file checked before).
Reported: seconds per arm (median) and the median of the per-repeat ratios against one
process, with their min and max. Results go to `benchmarks/results/scan-{kind}.{md,json}`.
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
ARMS = ("one process", "pool", "cached")


def write_corpus(folder: Path, files: int, rows: int) -> str:
    from ingest.lm_data import function_examples

    functions = function_examples()["train"]
    for part in range(files):
        with open(folder / f"part-{part:03d}.jsonl", "w") as out:
            for i in range(rows):
                prompt, completion = functions[(part * rows + i) % len(functions)]
                out.write(json.dumps({"id": f"{part}-{i}", "prompt": prompt, "completion": completion}) + "\n")
    return str(folder / "part-*.jsonl")


def write_table(folder: Path, files: int, rows: int) -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for part in range(files):
        x = rng.normal(size=(rows, 64)).astype(np.float32)
        pq.write_table(pa.table({"id": [f"{part}-{i}" for i in range(rows)],
                                 "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 64),
                                 "y": rng.integers(0, 10, rows)}), folder / f"part-{part:03d}.parquet")
    return str(folder / "part-*.parquet")


def data_config(kind: str, train: str, workers: int) -> dict[str, Any]:
    from ingest.lm_data import DEFAULT_TOKENIZER

    if kind == "classes":
        return {"source": {"format": "parquet", "train": train, "test_fraction": 0.05, "stream": True,
                           "scan_workers": workers, "columns": {"input": "x", "label": "y", "id": "id"}}}
    return {"tokenizer": DEFAULT_TOKENIZER, "sequence_length": 128,
            "source": {"format": "jsonl", "train": train, "test_fraction": 0.05, "stream": True, "scan_workers": workers,
                       "columns": {"prompt": "prompt", "completion": "completion", "id": "id"}}}


def run_arm(config: dict[str, Any]) -> dict[str, Any]:
    """A driver's start: the dataset of `config`, in this process."""
    from ingest.config import DataConfig
    from ingest.loading import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(DataConfig.model_validate(config))
    return {"seconds": time.perf_counter() - start, "rows": dataset.streamed.rows,
            "fingerprint": dataset.fingerprint, "test_rows": len(dataset.test.x)}


def _arm_in_process(config: dict[str, Any], cache: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.scan", "--arm", json.dumps(config)], capture_output=True,
                         text=True, check=True, env={**os.environ, "DISTILLERY_CACHE_DIR": str(cache)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("lm", "classes"), default="lm")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one arm's data config, run in this process
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(json.loads(args.arm))))
        return
    from benchmarks.machine import describe_machine

    cores = os.cpu_count() or 1
    samples = []
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as temp:
        train = (write_corpus if args.kind == "lm" else write_table)(Path(temp), args.files, args.rows)
        megabytes = sum(p.stat().st_size for p in Path(temp).glob("part-*")) / 2**20
        for repeat in range(args.repeats):
            caches = {arm: Path(temp) / f"cache-{arm}" for arm in ("one process", "pool")}
            for cache in caches.values():
                shutil.rmtree(cache, ignore_errors=True)
            order = ARMS if repeat % 2 == 0 else ("pool", "cached", "one process")
            sample = {}
            for arm in order:
                workers = 1 if arm == "one process" else cores
                sample[arm] = _arm_in_process(data_config(args.kind, train, workers),
                                              caches["one process" if arm == "one process" else "pool"])
            if len({s["fingerprint"] for s in sample.values()}) != 1:
                raise RuntimeError(f"the arms disagree on the split: {sample}")
            samples.append(sample)
            print(f"repeat {repeat}: { {arm: round(s['seconds'], 2) for arm, s in sample.items()} }", flush=True)
    speed = {arm: [s["one process"]["seconds"] / s[arm]["seconds"] for s in samples] for arm in ("pool", "cached")}
    result = {"machine": describe_machine(), "kind": args.kind, "files": args.files, "rows_per_file": args.rows, "megabytes": megabytes,
              "repeats": args.repeats, "cores": cores, "rows": samples[0]["one process"]["rows"],
              "seconds": {arm: statistics.median(s[arm]["seconds"] for s in samples) for arm in ARMS},
              "speedup": {arm: {"median": statistics.median(v), "min": min(v), "max": max(v)} for arm, v in speed.items()},
              "samples": samples}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scan-{args.kind}.json").write_text(json.dumps(result, indent=2))
    table = render(result)
    (RESULTS / f"scan-{args.kind}.md").write_text(table)
    print(table)


def render(result: dict[str, Any]) -> str:
    what = ("JSONL files of {:,} prompt/completion rows" if result["kind"] == "lm" else
            "Parquet files of {:,} rows (64 float features, a label, an id)").format(result["rows_per_file"])
    lines = [f"# The driver's check of a streamed split ({result['kind']})", "",
             f"Machine: {result['machine']}. {result['files']} {what} ({result['megabytes']:.0f} MB; {result['rows']:,} "
             f"training rows after a 5 % held-out test share"
             + ("; the default tokenizer, sequence length 128" if result["kind"] == "lm" else "")
             + f"); {result['repeats']} repeats, each arm a driver's start in its own process, back to back.", "",
             "| arm | seconds (median) | speed against one process (median of the per-repeat ratios, min, max) |",
             "|---|---:|---|"]
    for arm in ARMS:
        ratio = result["speedup"].get(arm)
        shown = f"{ratio['median']:.2f}x ({ratio['min']:.2f}, {ratio['max']:.2f})" if ratio else "1"
        label = {"pool": f"pool of {result['cores']} processes"}.get(arm, arm)
        lines.append(f"| {label} | {result['seconds'][arm]:.1f} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
