"""Student throughput and train-worker memory: a Parquet transfer split read into memory vs
streamed through Ray Data (`data.source.stream`).

    python -m benchmarks.data [--repeats 5] [--rows 750000] [--large-factor 10]

Writes synthetic classification rows (64 float32 features, 10 classes, a string id) as
Parquet files of 100,000 rows, then runs one student epoch (`benchmarks/configs/data.yaml`,
no teachers, 2 Train workers) both ways, back to back in each repeat (the order alternates),
with `distillery run`'s own code on one local cluster. Reports the median of the per-repeat
ratios of samples/s (streamed / in memory) with their min and max; then the memory part, one
streamed epoch over the rows and one over `--large-factor` times as many, to show whether a
train worker's memory grows with the data. Results go to `benchmarks/results/data.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cluster.ray_env import prepare_ray_env

RESULTS = Path(__file__).parent / "results"
CONFIG = "benchmarks/configs/data.yaml"
FEATURES, CLASSES, FILE_ROWS = 64, 10, 100_000
BATCH_ROWS = 2 * 256  # a step's rows over both workers (benchmarks/configs/data.yaml)


def write_rows(folder: Path, rows: int, seed: int, start: int = 0) -> int:
    """`rows` rows of Gaussian clusters (one per class) as Parquet files of FILE_ROWS rows;
    returns the bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)).astype(np.float32)
    written = 0
    for number, first in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - first)
        y = rng.integers(0, CLASSES, n)
        x = centres[y] + rng.normal(scale=1.5, size=(n, FEATURES)).astype(np.float32)
        table = pa.table({"id": [f"row-{start + first + i}" for i in range(n)],
                          "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), FEATURES), "y": y})
        path = folder / f"part-{number:05d}.parquet"
        pq.write_table(table, path)
        written += path.stat().st_size
    return written


def _epoch(data: Path, transfer: Path, streamed: bool, name: str, out: Path) -> dict[str, Any]:
    from orchestration.run import run

    overrides = {"data.source.train": str(data / "train" / "*.parquet"), "data.source.test":
                 str(data / "test" / "*.parquet"), "data.source.transfer": str(transfer / "*.parquet"),
                 "data.source.stream": streamed}
    run(CONFIG, run_name=name, output_dir=str(out), overrides=overrides)
    phase = json.loads((out / name / "state.json").read_text())["phases"]["kd-seed0"]
    return {"samples_per_s": phase["samples_per_s"], "after_first_interval_samples_per_s": _after_first(out / name),
            "peak_rss_mb": phase["peak_rss_mb"], "peak_private_mb": phase["peak_private_mb"],
            "samples": phase["samples_seen"],
            "batches_lost": phase["batches_lost"]}


def _after_first(run_dir: Path) -> float:
    """Samples/s from rank 0's first progress record to its last: the epoch without the time
    before the first `log_every` steps (where a stream starts its read tasks)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if r.get("rank") == 0 and "throughput/samples_per_s" in r]
    first, last = steps[0], steps[-1]
    return (last["step"] - first["step"]) * BATCH_ROWS / (last["time"] - first["time"])


def main(argv: list[str] | None = None) -> None:
    prepare_ray_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=750_000, help="transfer rows (about 0.2 GB in memory)")
    parser.add_argument("--large-factor", type=int, default=10, help="the memory part's larger split, in --rows")
    parser.add_argument("--part", choices=("all", "throughput", "memory"), default="all",
                        help="one part only: the other's figures are kept from the results file")
    parser.add_argument("--data-dir", help="keep the written Parquet files here and reuse them (default: a temp dir)")
    args = parser.parse_args(argv)

    from benchmarks.machine import describe_machine

    results = RESULTS / "data.json"
    result = json.loads(results.read_text()) if args.part != "all" and results.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="distillery-data-bench-") as tmp:
        data, out = Path(args.data_dir or Path(tmp) / "data"), Path(tmp) / "runs"
        small = _written(data, "small", args.rows, seed=3)
        result.update(machine=describe_machine(), rows=args.rows, parquet_gb=round(small / 1e9, 2))
        if args.part in ("all", "throughput"):
            result.update(_throughput(data, out, args.repeats))
        if args.part in ("all", "memory"):
            large = _written(data, "large", args.rows * args.large_factor, seed=4)
            result.pop("large", None)  # the figures of an older layout of this file
            result["memory"] = {
                "small": {"rows": args.rows, "parquet_gb": round(small / 1e9, 2),
                          **_epoch(data, data / "small", True, "memory-small", out)},
                "large": {"rows": args.rows * args.large_factor, "parquet_gb": round(large / 1e9, 2),
                          **_epoch(data, data / "large", True, "memory-large", out)}}
            print(f"memory: {result['memory']}")
    RESULTS.mkdir(exist_ok=True)
    results.write_text(json.dumps(result, indent=2))
    (RESULTS / "data.md").write_text(_report(result))
    print(_report(result))


def _written(data: Path, name: str, rows: int, seed: int) -> int:
    """The bytes of the split `name` of `rows` rows, written unless already there (with the
    small teachers' train and test splits)."""
    for split, n, split_seed, start in (("train", 5_000, 1, 10**9), ("test", 2_000, 2, 2 * 10**9),
                                        (name, rows, seed, 0)):
        marker = data / split / f"_rows-{n}"
        if not marker.is_file():
            write_rows(data / split, n, seed=split_seed, start=start)
            marker.write_text("")
    size = sum(f.stat().st_size for f in (data / name).glob("*.parquet"))
    print(f"{name}: {rows} rows, {size / 1e9:.2f} GB of Parquet")
    return size


def _throughput(data: Path, out: Path, repeats: int) -> dict[str, Any]:
    """Both arms back to back in each repeat, the order alternating."""
    arms: dict[str, list[dict]] = {"in memory": [], "streamed": []}
    for repeat in range(repeats):
        order = ["in memory", "streamed"] if repeat % 2 == 0 else ["streamed", "in memory"]
        for arm in order:
            figures = _epoch(data, data / "small", arm == "streamed", f"{arm.replace(' ', '-')}-{repeat}", out)
            arms[arm].append(figures)
            print(f"repeat {repeat} {arm}: {figures}")
    return {"repeats": repeats, "arms": arms, **_ratios(arms, "samples_per_s", "ratio"),
            **_ratios(arms, "after_first_interval_samples_per_s", "steady")}


def _ratios(arms: dict[str, list[dict]], key: str, name: str) -> dict[str, float]:
    ratios = [s[key] / m[key] for s, m in zip(arms["streamed"], arms["in memory"])]
    return {f"{name}_median": statistics.median(ratios), f"{name}_min": min(ratios), f"{name}_max": max(ratios)}


def _report(r: dict[str, Any]) -> str:
    med = lambda arm, key: statistics.median(f[key] for f in r["arms"][arm])  # noqa: E731
    lines = ["# Data benchmark: a Parquet transfer split in memory vs streamed through Ray Data", "",
             f"Machine: {r['machine']}. `python -m benchmarks.data --repeats {r['repeats']} --rows {r['rows']}`: one "
             f"student epoch, 2 Train workers, no teachers, {r['rows']:,} rows ({r['parquet_gb']} GB of Parquet).", "",
             "| arm | samples/s, whole epoch (median) | after the first 100 steps | rank 0 peak RSS, MB |",
             "|---|---:|---:|---:|"]
    for arm in r["arms"]:
        lines.append(f"| {arm} | {med(arm, 'samples_per_s'):,.0f} | {med(arm, 'after_first_interval_samples_per_s'):,.0f}"
                     f" | {med(arm, 'peak_rss_mb'):,.0f} |")
    lines += ["", f"Streamed / in memory, samples/s over the whole epoch: median of the per-repeat ratios "
                  f"**{r['ratio_median']:.2f}** (min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f}, {r['repeats']} "
                  f"repeats); after the first 100 steps: **{r['steady_median']:.2f}** (min {r['steady_min']:.2f}, "
                  f"max {r['steady_max']:.2f})."]
    memory = r.get("memory")
    if memory:
        lines += ["", "Memory of rank 0's train worker over one streamed epoch, small and large split: the peak "
                      "resident set, which counts the pages of Ray's object store (a shared-memory file) the worker "
                      "read blocks from, and the largest private memory outside shared-memory files its progress "
                      "records saw (`students/reporting.py: private_mb`):", "",
                  "| streamed split | Parquet GB | samples/s | peak RSS, MB | peak private, MB |",
                  "|---|---:|---:|---:|---:|"]
        for size in ("small", "large"):
            m = memory[size]
            lines.append(f"| {m['rows']:,} rows | {m['parquet_gb']} | {m['samples_per_s']:,.0f} | "
                         f"{m['peak_rss_mb']:,.0f} | {m.get('peak_private_mb', float('nan')):,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
