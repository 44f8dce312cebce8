"""Tokenizing a language-model block: what every read task of a streamed LM source, and the
driver's check of its splits, spend per block of rows.

    python -m benchmarks.tokenize [--rows 20000] [--length 128] [--repeats 5]

The rows are the standard library's functions (`prompt`: signature, `completion`: docstring,
as `data.dataset: stdlib_functions`), repeated to `--rows`, tokenized with the default
tokenizer. Two arms, back to back in each repeat (the order alternating):
- "one pass" (`ingest.lm_sequences.prompt_completion_rows`, what `ingest.lm_source` runs):
  the packed sequences and each row's length before the cut from one batched tokenization of
  the prompts and one of the completions;
- "lengths per row" (the code before it): the same sequences, with the lengths that count the
  cut rows from a second tokenization, one call per prompt and per completion.
Reported: rows per second of each arm (median), and the median of the per-repeat speed ratios
with their min and max. Results go to `benchmarks/results/tokenize.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def lengths_per_row(tokenizer, pairs: list[tuple[str, str]], length: int) -> np.ndarray:
    """The baseline: lengths from a call per text, then the batched encoding."""
    from ingest.lm_data import encode_examples

    lengths = [len(tokenizer(p)["input_ids"])
               + len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for p, c in pairs]
    int(sum(n > length for n in lengths))
    return encode_examples(tokenizer, pairs, length)


def one_pass(tokenizer, pairs: list[tuple[str, str]], length: int) -> np.ndarray:
    from ingest.lm_sequences import prompt_completion_rows
    from ingest.token_layout import padded

    rows = prompt_completion_rows(tokenizer, [p for p, _ in pairs], [c for _, c in pairs])
    int(sum(len(row) > length for row in rows))
    return padded(rows, length)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from benchmarks.machine import describe_machine
    from ingest.lm_data import DEFAULT_TOKENIZER, function_examples
    from ingest.text_inputs import cached_tokenizer

    tokenizer = cached_tokenizer(DEFAULT_TOKENIZER)
    functions = function_examples()["train"]
    pairs = [functions[i % len(functions)] for i in range(args.rows)]
    arms = {"one pass": one_pass, "lengths per row": lengths_per_row}
    assert np.array_equal(one_pass(tokenizer, pairs[:500], args.length),
                          lengths_per_row(tokenizer, pairs[:500], args.length))  # the same sequences
    samples = []
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
        seconds = {}
        for arm in order:
            start = time.perf_counter()
            arms[arm](tokenizer, pairs, args.length)
            seconds[arm] = time.perf_counter() - start
        samples.append(seconds)
        print(f"repeat {repeat}: {seconds}", flush=True)
    ratios = [s["lengths per row"] / s["one pass"] for s in samples]
    result = {"machine": describe_machine(), "rows": args.rows, "length": args.length, "repeats": args.repeats,
              "rows_per_s": {arm: statistics.median(args.rows / s[arm] for s in samples) for arm in arms},
              "samples": samples,
              "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tokenize.json").write_text(json.dumps(result, indent=2))
    speed = result["speedup"]
    table = "\n".join([
        "# Tokenizing a language-model block", "",
        f"Machine: {result['machine']}. {args.rows:,} prompt/completion rows (the standard library's functions), "
        f"sequence length {args.length}, the default tokenizer, {args.repeats} repeats, arms back to back.", "",
        "| arm | rows per second (median) |", "|---|---|",
        *[f"| {arm} | {rate:,.0f} |" for arm, rate in result["rows_per_s"].items()], "",
        f"One pass is {speed['median']:.2f}x faster (min {speed['min']:.2f}, max {speed['max']:.2f}), median of the "
        f"per-repeat ratios."]) + "\n"
    (RESULTS / "tokenize.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
