"""The KD loss on top-k records at a large vocabulary: the dense-expansion path (every record
spread to a [B, V] float32 tensor, stacked [N, B, V], merged, then the dense KL) against the
sparse path (`students.sparse_kd`: merged on the union of the records' ids, the student's side
in row chunks under checkpointing).

    python -m benchmarks.kd_memory [--rows 4096] [--vocab 151936] [--top-k 64] [--teachers 2] [--repeats 5]

Each arm runs in a process of its own, back to back in each repeat (the order alternating):
it makes the student's logits [rows, V] (float32, with gradient) and the teachers' top-k
records, then times one forward and backward of the `kd` term and reads the process's peak
resident memory (Linux's ru_maxrss). What an arm holds beyond the logits and their gradient is
that peak less the resident memory before the loss and less the gradient's bytes. Reports the
medians, and the median of the per-repeat ratios (dense / sparse) with their min and max.
Two more arms run in each repeat for reference: the sparse path with the hard-label `ce` term
beside `kd` (0.5 each, what a language-model method trains with; `ce` in row chunks too), and
`kd` from sampled records of k draws per teacher instead of the top k.
Results go to `benchmarks/results/kd_memory.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
TEMPERATURE = 2.0


ARMS = ("dense", "sparse", "sparse, ce + kd", "sampled")


def _records(rows: int, vocab: int, top_k: int, teachers: int, seed: int, sampled: bool = False):
    """Top-k records like a language-model teacher's: k distinct ids per row, their
    log-probabilities at T (float16, as on the wire) and the tail's; or (`sampled`) k draws
    from those ids by their mass, each with the importance weight 1/k."""
    from teachers import TeacherTargets
    from teachers.soft_targets import SoftTargets

    rng = np.random.default_rng(seed)
    records = {}
    for t in range(teachers):
        ids = np.stack([rng.choice(vocab, top_k, replace=False) for _ in range(rows)]).astype(np.int32)
        mass = rng.dirichlet(np.ones(top_k + 1) * 0.3, size=rows)  # the last share is the tail's
        if sampled:
            pick = np.stack([rng.choice(top_k, top_k, p=m[:top_k] / m[:top_k].sum()) for m in mass])
            records[f"t{t}"] = SoftTargets(
                batch_id="bench", teacher=f"t{t}", teacher_version="1", temperature=TEMPERATURE,
                output_space=f"tokens:{vocab}", num_classes=vocab, topk_idx=np.take_along_axis(ids, pick, 1),
                topk_logprob=np.log(np.take_along_axis(mass, pick, 1)).astype(np.float16),
                sample_weight=np.full((rows, top_k), 1 / top_k, np.float16))
            continue
        records[f"t{t}"] = SoftTargets(batch_id="bench", teacher=f"t{t}", teacher_version="1", temperature=TEMPERATURE,
                                       output_space=f"tokens:{vocab}", num_classes=vocab, topk_idx=ids,
                                       topk_logprob=np.log(mass[:, :top_k]).astype(np.float16),
                                       tail_logprob=np.log(mass[:, top_k]).astype(np.float32))
    return TeacherTargets(records, {name: 1.0 for name in records})


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def run_arm(arm: str, rows: int, vocab: int, top_k: int, teachers: int) -> dict[str, float]:
    """One forward and backward of the `kd` term on one path, in this process."""
    import torch

    from students.kd_terms import TERMS, TermInputs
    from students.losses import CompositeLoss, Term
    from students.teacher_merge import merge_teachers, stacked_logprob, static_weights
    from students.weighting import Weighting

    torch.set_num_threads(2)
    targets = _records(rows, vocab, top_k, teachers, seed=0, sampled=arm == "sampled")
    logits = (torch.randn(rows, vocab, generator=torch.Generator().manual_seed(1)) * 3).requires_grad_()
    labels = torch.zeros(rows, dtype=torch.long)
    before = _current_mb()
    start = time.perf_counter()
    if arm in ("sparse", "sampled"):
        loss = CompositeLoss([Term("kd")], TEMPERATURE)(logits, labels, targets)["kd"]
    elif arm == "sparse, ce + kd":
        loss = CompositeLoss([Term("ce", 0.5), Term("kd", 0.5)], TEMPERATURE)(logits, labels, targets)["total"]
    else:  # today's path for top-k records: dense [N, B, V], merged, dense KL
        merged = merge_teachers(Weighting(), targets.names, stacked_logprob(targets, TEMPERATURE),
                                static_weights(targets), labels)
        loss = TERMS.get("kd")(TermInputs(logits, labels, TEMPERATURE, teacher_logprob=merged.logprob))
    loss.backward()
    seconds = time.perf_counter() - start
    logits_mb = logits.numel() * 4 / 2**20
    return {"seconds": seconds, "loss": float(loss.detach()), "peak_rss_mb": _peak_mb(), "before_mb": before,
            "logits_mb": logits_mb, "beyond_logits_and_grad_mb": _peak_mb() - before - logits_mb}


def _arm_in_process(arm: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.kd_memory", "--arm", arm, "--rows", str(args.rows),
                          "--vocab", str(args.vocab), "--top-k", str(args.top_k), "--teachers", str(args.teachers)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--teachers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one arm, in this process
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.rows, args.vocab, args.top_k, args.teachers)))
        return
    from benchmarks.machine import describe_machine

    arms: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in (ARMS if repeat % 2 == 0 else ARMS[::-1]):
            arms[arm].append(_arm_in_process(arm, args))
            print(f"repeat {repeat} {arm}: {arms[arm][-1]}", flush=True)
    ratios = {key: [d[key] / s[key] for d, s in zip(arms["dense"], arms["sparse"])]
              for key in ("seconds", "beyond_logits_and_grad_mb")}
    result = {"machine": describe_machine(), "rows": args.rows, "vocab": args.vocab, "top_k": args.top_k,
              "teachers": args.teachers, "repeats": args.repeats, "arms": arms,
              "ratios": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in ratios.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kd_memory.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "kd_memory.md").write_text(_report(result))
    print(_report(result))


def _report(r: dict[str, Any]) -> str:
    med = lambda arm, key: statistics.median(x[key] for x in r["arms"][arm])  # noqa: E731
    logits = r["arms"]["sparse"][0]["logits_mb"]
    lines = ["# KD loss on top-k records: dense expansion vs sparse", "",
             f"Machine: {r['machine']}. `python -m benchmarks.kd_memory --rows {r['rows']} --vocab {r['vocab']} "
             f"--top-k {r['top_k']} --teachers {r['teachers']} --repeats {r['repeats']}`: one forward and backward "
             f"of the `kd` term; the student's logits are {logits:,.0f} MB (float32) and so is their gradient. "
             "Memory: the process's peak resident set (ru_maxrss) less what it held before the loss and less the "
             "gradient; each arm in a process of its own.", "",
             "| path | seconds (median) | beyond the logits and their gradient, MB (median) | "
             "share of the logits and their gradient |",
             "|---|---:|---:|---:|"]
    for arm in r["arms"]:
        beyond = med(arm, "beyond_logits_and_grad_mb")
        lines.append(f"| {arm} | {med(arm, 'seconds'):.2f} | {beyond:,.0f} | {beyond / (2 * logits):.1%} |")
    ratio = r["ratios"]
    lines += ["", f"Dense / sparse, median of the per-repeat ratios: time **{ratio['seconds']['median']:.1f}x** "
                  f"(min {ratio['seconds']['min']:.1f}, max {ratio['seconds']['max']:.1f}); memory beyond the logits "
                  f"**{ratio['beyond_logits_and_grad_mb']['median']:.1f}x** (min "
                  f"{ratio['beyond_logits_and_grad_mb']['min']:.1f}, max {ratio['beyond_logits_and_grad_mb']['max']:.1f})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
