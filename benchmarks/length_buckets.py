"""Student steps on chat rows of mixed lengths: batches in plan order against length buckets.

    python -m benchmarks.length_buckets [--rows 256] [--length 256] [--batch 8] [--repeats 3]

Rows: conversations about the standard library's functions (`deploy/examples/write_chat_rows.py`,
answers of 10 to 80 words), rendered by SmolLM2-135M-Instruct's chat template, packed into
`--length` tokens. Student: SmolLM2's embeddings and head with 2 of its decoder layers, float32,
a forward and backward of `summed_nll` per batch (what a training step computes besides the KD
terms). Arms, back to back within each repeat (order alternating): one epoch of
`plan_epoch` batches as planned, and with `length_buckets=8`; the causal LM computes each
batch up to its longest sequence in both. Reported: target tokens per second (median) and the
median of the per-repeat ratios with min and max, and the padding each plan computes.
Results go to `benchmarks/results/length_buckets.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
ARMS = {"as planned": 0, "length_buckets 8": 8}


def chat_split(rows: int, length: int):
    import sys

    from ingest import SMOLLM2, Split, load_tokenizer
    from ingest.lm_sequences import chat_row
    from ingest.text_data import stdlib_files
    from ingest.token_layout import padded

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "examples"))
    from write_chat_rows import conversations

    tokenizer = load_tokenizer(SMOLLM2)
    rng = np.random.default_rng(0)
    packed = []
    for path in stdlib_files():
        for turns in conversations(path, int(rng.integers(10, 81))):
            packed.append(chat_row(tokenizer, turns))
            if len(packed) == rows:
                x = padded(packed, length)
                return Split(x, np.zeros(len(x), np.int64))
    raise ValueError(f"the standard library gave {len(packed)} conversations, fewer than --rows {rows}")


def epoch(lm, split, batch: int, buckets: int) -> tuple[float, int, int]:
    """Seconds, target tokens and padding entries computed for one epoch of `plan_epoch` batches."""
    from ingest import plan_epoch, sequence_lengths

    plan = plan_epoch(split, epoch=0, seed=0, shard=0, num_shards=1, batch_size=batch, length_buckets=buckets)
    start, tokens, padding = time.perf_counter(), 0, 0
    for b in plan:
        x = torch.from_numpy(b.x)
        nll, count = lm.summed_nll(x)
        (nll / max(count, 1)).backward()
        lengths = sequence_lengths(b.x)
        tokens, padding = tokens + count, padding + int(lengths.max() * len(lengths) - lengths.sum())
    lm.zero_grad(set_to_none=True)
    return time.perf_counter() - start, tokens, padding


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from benchmarks.machine import describe_machine
    from ingest import SMOLLM2
    from models.hf_lm import causal_lm

    split = chat_split(args.rows, args.length)
    lm = causal_lm(args.length, 0, tokenizer=SMOLLM2, path=SMOLLM2, layers=[0, 29], dtype="float32")
    epoch(lm, split, args.batch, 0)  # warm-up
    samples, tokens, padding = [], 0, {}
    for repeat in range(args.repeats):
        order = list(ARMS) if repeat % 2 == 0 else list(ARMS)[::-1]
        seconds = {}
        for arm in order:
            seconds[arm], tokens, padding[arm] = epoch(lm, split, args.batch, ARMS[arm])
        samples.append(seconds)
        print(f"repeat {repeat}: {seconds}", flush=True)
    ratios = [s["as planned"] / s["length_buckets 8"] for s in samples]
    lengths = (split.x != 0).sum(1)
    result = {"machine": describe_machine(), "rows": args.rows, "length": args.length, "batch": args.batch,
              "repeats": args.repeats, "row_lengths": {"mean": float(lengths.mean()), "min": int(lengths.min()),
                                                     "max": int(lengths.max())},
              "target_tokens": tokens, "padding_computed": padding, "samples": samples,
              "tokens_per_s": {arm: statistics.median(tokens / s[arm] for s in samples) for arm in ARMS},
              "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}
    write(result)


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "length_buckets.json").write_text(json.dumps(result, indent=2))
    speed, lengths = result["speedup"], result["row_lengths"]
    lines = ["# Length buckets: student steps on chat rows of mixed lengths", "",
             f"Machine: {result['machine']}. {result['rows']} chat rows (SmolLM2's template; {lengths['min']} to "
             f"{lengths['max']} tokens, mean {lengths['mean']:.0f}) in sequences of {result['length']}, batches of "
             f"{result['batch']}; SmolLM2's head with 2 decoder layers, forward and backward; {result['repeats']} "
             f"repeats, arms back to back. `python -m benchmarks.length_buckets`.", "",
             "| arm | target tokens per second (median) | padding entries computed per epoch |", "|---|---|---|",
             *[f"| {arm} | {rate:,.0f} | {result['padding_computed'][arm]:,} |"
               for arm, rate in result["tokens_per_s"].items()], "",
             f"Length buckets: {speed['median']:.2f}x (min {speed['min']:.2f}, max {speed['max']:.2f}), median of the "
             f"per-repeat ratios."]
    (RESULTS / "length_buckets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
