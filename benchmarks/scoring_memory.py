"""Peak memory of held-out scoring of a causal LM: the head and log-softmax in chunks of rows
against one float32 [N, V] per forward.

    python -m benchmarks.scoring_memory [--sequences 128] [--length 512] [--per-forward 64]

SmolLM2-135M-Instruct's embeddings, head and V = 49,152 with `--layers` of its decoder layers
(default 2: depth adds compute, not scoring memory), float32, on `--sequences` packed
sequences of `--length` tokens (32 context, the rest targets), `--per-forward` sequences a
forward, as students score their test split (`students.scoring.perplexity`). Two arms, each in
a fresh process so that its peak is its own:
- "chunked head" (now): `CausalLM.summed_nll`, the head and the log-softmax `head_chunk`
  rows at a time;
- "whole head" (before): the forward's logits of every target row of the forward at once,
  float32 [rows, V], then `cross_entropy` over them.
Reported: the peak resident memory beyond the loaded model and inputs (GiB), the seconds, and
that both arms give the same summed NLL. Results go to `benchmarks/results/scoring_memory.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
ARMS = ("chunked head", "whole head")


def _rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**30


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, float]:
    """One arm in this process: its summed NLL, seconds and peak memory beyond the model."""
    from benchmarks.teacher_scoring import token_inputs
    from ingest import SMOLLM2, target_labels
    from models.hf_lm import causal_lm

    torch.set_grad_enabled(False)
    lm = causal_lm(args.length, 0, tokenizer=SMOLLM2, path=SMOLLM2, dtype="float32",
                   layers=list(range(args.layers)))
    inputs = torch.from_numpy(token_inputs(args.sequences, args.length, lm.vocab_size))
    before = _rss_gib()
    start, nll = time.perf_counter(), 0.0
    for rows in inputs.split(args.per_forward):
        if arm == "chunked head":
            part, _ = lm.summed_nll(rows)
        else:
            part = torch.nn.functional.cross_entropy(lm(rows).float(), target_labels(rows), reduction="sum")
        nll += float(part)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"nll": nll, "seconds": time.perf_counter() - start, "beyond_model_gib": peak - before,
            "model_and_inputs_gib": before}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=128)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--per-forward", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--arm", choices=ARMS, help="run one arm in this process (what the benchmark's children do)")
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args)))
        return
    from benchmarks.machine import describe_machine

    base = [sys.executable, "-m", "benchmarks.scoring_memory", "--sequences", str(args.sequences), "--length",
            str(args.length), "--per-forward", str(args.per_forward), "--layers", str(args.layers)]
    arms = {}
    for arm in ARMS:
        out = subprocess.run([*base, "--arm", arm], check=True, capture_output=True, text=True).stdout
        arms[arm] = json.loads(out.strip().splitlines()[-1])
        print(arm, arms[arm], flush=True)
    same = bool(np.isclose(arms[ARMS[0]]["nll"], arms[ARMS[1]]["nll"], rtol=1e-5))
    result = {"machine": describe_machine(), "sequences": args.sequences, "length": args.length,
              "per_forward": args.per_forward, "layers": args.layers, "vocab": 49_152, "arms": arms,
              "same_nll": same}
    write(result)


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scoring_memory.json").write_text(json.dumps(result, indent=2))
    lines = ["# Held-out scoring memory of a causal LM", "",
             f"Machine: {result['machine']}. SmolLM2-135M-Instruct's embeddings and head (V = 49,152) with "
             f"{result['layers']} of its decoder layers, float32; {result['sequences']} sequences of "
             f"{result['length']} tokens, {result['per_forward']} a forward. "
             f"`python -m benchmarks.scoring_memory`.", "",
             "| arm | peak memory beyond the model and inputs (GiB) | seconds |", "|---|---|---|",
             *[f"| {arm} | {a['beyond_model_gib']:.2f} | {a['seconds']:.1f} |" for arm, a in result["arms"].items()],
             "", f"Both arms give the same summed NLL: {'yes' if result['same_nll'] else 'NO'}."]
    (RESULTS / "scoring_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
