"""A train worker's memory with an offline store: decoded into the process (the store as Parquet
read into memory) against memory-mapped from the node's copy (`teachers.store.StoredTargets`).

    python -m benchmarks.store_memory [--rows 4000000] [--top-k 16] [--repeats 3]

Writes one store like a language-model teacher's (top-k records, one row per target token, 512
tokens per sample, shards of 262,144 rows as Ray Data blocks would make) into a temporary
folder. Each arm runs in a process of its own, back to back in each repeat (the order
alternating): it opens the store as a worker does and reads 200 batches of 8 random samples.
The "decoded" arm is the same code with each shard read by `cluster.read_parquet` instead of
mapped (and its values checked in every process, where a mapped copy was checked once, when
the node's copy was made). Reported per arm: the process's private memory (Linux's RssAnon: what it alone holds)
after opening and after the batches, the part of it that is the row index (ids and runs), its
file-backed resident memory (RssFile: page cache it
shares with the node), the seconds to open (the mapped arm's first open on a node converts the
shards; the copies are reused after that) and the milliseconds per batch; and the median of
the per-repeat ratios of private memory (decoded / mapped) with their min and max.
Results go to `benchmarks/results/store_memory.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
TOKENS, SHARD_ROWS, VOCAB = 512, 262_144, 151_936
ARMS = ("decoded", "mapped, first open on the node", "mapped")


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _distinct_ids(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """k distinct token ids per row: k draws from k disjoint slices of the vocabulary."""
    width = VOCAB // k
    return (rng.integers(0, width, (rows, k)) + np.arange(k) * width).astype(np.int32)


def write_store(folder: Path, rows: int, top_k: int) -> str:
    """A top-k store of `rows` token rows; returns its folder."""
    from cluster import join, write_parquet
    from teachers.arrow_codec import to_table
    from teachers.soft_targets import SoftTargets
    from teachers.store import StoreKey, write_manifest

    key = StoreKey("bench", "lm", "v1", top_k, 1.0)
    store = key.folder(str(folder))
    rng = np.random.default_rng(0)
    for part, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        mass = rng.dirichlet(np.ones(top_k + 1), size=n)
        record = SoftTargets(batch_id="", teacher="lm", teacher_version="v1", temperature=1.0,
                             output_space=f"tokens:{VOCAB}:bench", num_classes=VOCAB,
                             topk_idx=_distinct_ids(rng, n, top_k),
                             topk_logprob=np.log(mass[:, :top_k]).astype(np.float16),
                             tail_logprob=np.log(mass[:, top_k]).astype(np.float32))
        sample = (start + np.arange(n)) // TOKENS
        write_parquet(to_table(record, sample=sample, row_ids=np.char.add("row-", sample.astype(str))),
                      join(store, f"part-{part:05d}.parquet"))
    write_manifest(store, key, teacher_test_score=None)
    return store


def run_arm(arm: str, store: str) -> dict[str, float]:
    """Open `store` as a worker does and read batches, in this process."""
    import teachers.store as store_module
    from cluster import read_parquet

    def decoded(location: str, check: Any = None) -> Any:
        table = read_parquet(location)
        if check is not None:  # every process checks what it decodes
            check(table)
        return table

    if arm == "decoded":
        store_module.read_parquet_mapped = decoded
    before = _status_mb("RssAnon")
    start = time.perf_counter()
    stored = store_module.StoredTargets(store, store_module.Manifest.read(store))
    open_s = time.perf_counter() - start
    opened = _status_mb("RssAnon")
    rng = np.random.default_rng(1)
    samples = stored.held_samples()
    start = time.perf_counter()
    for _ in range(200):
        stored.for_batch("b", rng.choice(samples, 8, replace=False))
    index_mb = (stored._runs.nbytes + (stored.ids.nbytes if stored.ids is not None else 0)) / 2**20
    return {"open_s": open_s, "batch_ms": (time.perf_counter() - start) / 200 * 1e3, "index_mb": index_mb,
            "private_mb_opened": opened - before, "private_mb_after_batches": _status_mb("RssAnon") - before,
            "file_backed_mb": _status_mb("RssFile")}


def _arm_in_process(arm: str, store: str, cache: str) -> dict[str, float]:
    if arm == "mapped, first open on the node":
        subprocess.run(["rm", "-rf", os.path.join(cache, "mapped")], check=True)
    out = subprocess.run([sys.executable, "-m", "benchmarks.store_memory", "--arm", arm, "--store", store],
                         capture_output=True, text=True, check=True, env={**os.environ, "DISTILLERY_CACHE_DIR": cache})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one arm, in this process
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.store)))
        return
    from benchmarks.machine import describe_machine

    with tempfile.TemporaryDirectory(prefix="store-bench-") as temp:
        store = write_store(Path(temp) / "stores", args.rows, args.top_k)
        store_mb = sum(f.stat().st_size for f in Path(store).glob("*.parquet")) / 2**20
        samples = []
        for repeat in range(args.repeats):
            order = ARMS if repeat % 2 == 0 else ("mapped, first open on the node", "mapped", "decoded")
            samples.append({arm: _arm_in_process(arm, store, str(Path(temp) / "cache")) for arm in order})
            print(f"repeat {repeat}: {samples[-1]}", flush=True)
    ratios = [s["decoded"]["private_mb_after_batches"] / max(s["mapped"]["private_mb_after_batches"], 1e-9)
              for s in samples]
    summary = {arm: {name: statistics.median(s[arm][name] for s in samples) for name in samples[0][arm]}
               for arm in ARMS}
    result = {"machine": describe_machine(), "rows": args.rows, "top_k": args.top_k, "store_parquet_mb": store_mb,
              "repeats": args.repeats, "arms": summary, "samples": samples,
              "private_ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store_memory.json").write_text(json.dumps(result, indent=2))
    table = render(result)
    (RESULTS / "store_memory.md").write_text(table)
    print(table)


def render(result: dict[str, Any]) -> str:
    ratio = result["private_ratio"]
    lines = ["# A train worker's memory with an offline store: decoded against memory-mapped", "",
             f"Machine: {result['machine']}. A store of {result['rows']:,} top-{result['top_k']} token rows "
             f"({result['store_parquet_mb']:.0f} MB of Parquet), {result['repeats']} repeats, each arm in its own "
             f"process; medians. Private memory is the process's own (RssAnon), file-backed memory the page "
             f"cache it shares with the node's other processes (RssFile).", "",
             "| arm | open (s) | ms per batch of 8 samples | private MB after opening | after 200 batches | "
             "of which the row index | file-backed MB |", "|---|---|---|---|---|---|---|"]
    for arm, f in result["arms"].items():
        lines.append(f"| {arm} | {f['open_s']:.1f} | {f['batch_ms']:.2f} | {f['private_mb_opened']:.0f} | "
                     f"{f['private_mb_after_batches']:.0f} | {f['index_mb']:.1f} | {f['file_backed_mb']:.0f} |")
    lines += ["", f"Private memory, decoded / mapped: {ratio['median']:.1f}x (min {ratio['min']:.1f}, "
                  f"max {ratio['max']:.1f}), median of the per-repeat ratios."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
