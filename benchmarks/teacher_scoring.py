"""A teacher replica's scoring path against the bare model: how close records come to the
forward that makes them.

    python -m benchmarks.teacher_scoring [--sequences 8] [--length 128] [--repeats 3] [--device cpu]

Two parts, every arm back to back within each repeat (order alternating), reported as the
median of the per-repeat ratios with their min and max:

1. Scoring, tokens per second. SmolLM2-135M-Instruct (V = 49,152; `distillery warmup` converts
   it; `--lm` another, `--random-weights` its architecture only, as a GPU machine carries it) on `--sequences` packed sequences of `--length` tokens, and a synthetic head (a linear
   layer from 64 features to V = 151,936 outputs, one row per token). For each: the bare
   forward followed by `torch.topk` (k = 64) or `torch.multinomial` (16 draws from the softmax),
   against `LoadedTeacher.records` making top-64 or 16-draw sampled records of the same inputs,
   and (SmolLM2, top-64) the numpy packer that records used before (`pack_soft_targets` on
   float32 logits copied to the host).
2. Packing, microseconds per token: `pack_soft_targets` (numpy, on the host) against
   `pack_chunks` (torch, on the teacher's device) on the same logits, at V = 49,152 and 151,936.

Results go to `benchmarks/results/teacher_scoring.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
TOP_K, DRAWS, WIDE_VOCAB = 64, 16, 151_936
META = dict(teacher="bench", teacher_version="-", temperature=1.0, dense_max_classes=1024)


def lm_teacher_args(name: str, lm: str, random_weights: bool, dtype: str, **extra):
    """A causal LM teacher's arguments: `lm` pretrained, or its architecture with random weights
    (a folder with only its config and tokenizer is enough: what a GPU machine can carry)."""
    from teachers.loaded import TeacherAppArgs

    kwargs = {"tokenizer": lm, "path": lm, "head_chunk": 1024, "in_features": 128, "num_classes": 0}
    if random_weights:
        kwargs["pretrained"] = False
    return TeacherAppArgs(name=name, factory="models.hf_lm:causal_lm", kwargs=kwargs, allowed_modules=["models.hf_lm"],
                          weights_path=None, in_features=128, temperature=1.0, top_k=TOP_K, dtype=dtype, **extra)


def lm_teacher(device: str, lm: str, random_weights: bool, dtype: str):
    from teachers.loaded import LoadedTeacher

    return LoadedTeacher.load(lm_teacher_args("lm", lm, random_weights, dtype), device)


def wide_head_teacher(device: str, folder: Path, dtype: str):
    from safetensors.torch import save_file

    from teachers.backend import ResolvedModel
    from teachers.loaded import LoadedTeacher, TeacherAppArgs

    model = ResolvedModel("models.zoo:mlp", {"in_features": 64, "num_classes": WIDE_VOCAB, "hidden": []})
    torch.manual_seed(0)
    path = folder / "wide_head.safetensors"
    save_file(model.build().state_dict(), str(path))
    return LoadedTeacher.load(TeacherAppArgs(name="wide", factory=model.factory, kwargs=model.kwargs,
                                             allowed_modules=list(model.allowed_modules), weights_path=str(path),
                                             in_features=64, temperature=1.0, dtype=dtype), device)


def token_inputs(sequences: int, length: int, vocab: int) -> np.ndarray:
    """Packed sequences: a 16-token context, then targets (`ingest.token_layout`)."""
    from ingest.token_layout import CONTEXT, TARGET, with_role

    ids = np.random.default_rng(0).integers(3, vocab, size=(sequences, length))
    roles = np.full(ids.shape, TARGET)
    roles[:, :16] = CONTEXT
    return with_role(ids, roles)


def scoring_arms(teacher, inputs: np.ndarray) -> dict[str, Callable[[], object]]:
    """The bare model's forward plus topk / multinomial, and the scoring path, on `inputs`."""
    from ingest import Batch
    from teachers.soft_targets import concat_rows, pack_soft_targets

    module, device = teacher.module, teacher.device
    tokens = teacher.output_space.startswith("tokens:")
    x = torch.tensor(inputs, device=device) if tokens else teacher._inputs(inputs)

    def logits_chunks():
        return module.head_chunks(module.target_hidden(x)) if tokens else [module(x)]

    def bare(sample: bool) -> Callable[[], object]:
        def run():
            with torch.inference_mode():
                for z in logits_chunks():
                    out = torch.multinomial(torch.softmax(z.float(), -1), DRAWS, replacement=True) if sample \
                        else z.topk(TOP_K, dim=-1)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return out
        return run

    def numpy_packer():
        with torch.inference_mode():
            return concat_rows([pack_soft_targets(z.float().cpu().numpy(), batch_id="b", output_space="tokens:x",
                                                  top_k=TOP_K, **META) for z in logits_chunks()])

    batches = [Batch.of_inputs("bench/e0/b0", inputs)]
    arms = {"bare forward + topk": bare(False),
            "records top-64": lambda: teacher.records(batches, top_k=TOP_K, target_kind="topk"),
            "bare forward + multinomial": bare(True),
            "records 16 draws": lambda: teacher.records(batches, top_k=DRAWS, target_kind="sampled")}
    if tokens:
        arms["numpy packer top-64 (before)"] = numpy_packer
    return arms


def packing_arms(vocab: int, rows: int, device: torch.device) -> dict[str, Callable[[], object]]:
    from teachers.device_targets import pack_chunks, row_chunks
    from teachers.soft_targets import pack_soft_targets

    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)) * 3
    on_device, on_host = logits.to(device), logits.numpy()
    arms = {}
    for kind, k in (("topk", TOP_K), ("sampled", DRAWS)):
        def numpy_arm(kind=kind, k=k):
            return pack_soft_targets(on_host, batch_id="b", output_space="tokens:x", top_k=k, target_kind=kind,
                                     **META)

        def torch_arm(kind=kind, k=k):
            arrays = pack_chunks(row_chunks(on_device), num_classes=vocab, output_space="tokens:x", top_k=k,
                                 target_kind=kind, temperature=1.0, dense_max_classes=1024)
            return {name: value.cpu().numpy() for name, value in arrays.items()}
        arms[f"numpy {kind}"], arms[f"torch {kind}"] = numpy_arm, torch_arm
    return arms


def paired(arms: dict[str, Callable[[], object]], repeats: int) -> list[dict[str, float]]:
    """Seconds of each arm per repeat, arms back to back, the order alternating; one warm-up."""
    for run in arms.values():
        run()
    samples = []
    for repeat in range(repeats):
        order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
        seconds = {}
        for arm in order:
            start = time.perf_counter()
            arms[arm]()
            seconds[arm] = time.perf_counter() - start
        samples.append(seconds)
    return samples


def ratio(samples: list[dict[str, float]], slow: str, fast: str) -> dict[str, float]:
    """Median, min and max of the per-repeat ratio slow seconds / fast seconds."""
    values = [s[slow] / s[fast] for s in samples]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="teacher_scoring")
    parser.add_argument("--lm", default=None, help="the language model (default: SmolLM2-135M-Instruct's GGUF)")
    parser.add_argument("--random-weights", action="store_true", help="its architecture with random weights")
    parser.add_argument("--dtype", default="float32", help="the teachers' dtype (bfloat16 on a GPU)")
    args = parser.parse_args(argv)
    import tempfile

    from benchmarks.machine import describe_machine
    from ingest.token_layout import targets_per_sequence

    device = torch.device(args.device)
    result = {"machine": describe_machine(), "device": str(device), "sequences": args.sequences,
              "length": args.length, "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "dtype": args.dtype,
              "scoring": {}, "packing": {}}
    with tempfile.TemporaryDirectory() as folder:
        from ingest import SMOLLM2

        lm = args.lm or SMOLLM2
        label = "SmolLM2-135M" if lm == SMOLLM2 else Path(lm).name
        label += " random weights" if args.random_weights else ""
        models = {f"{label} (V = 49,152)": lambda: (lm_teacher(str(device), lm, args.random_weights, args.dtype), True),
                  "synthetic head (V = 151,936)": lambda: (wide_head_teacher(str(device), Path(folder), args.dtype),
                                                           False)}
        for label, make in models.items():
            teacher, tokens = make()
            inputs = token_inputs(args.sequences, args.length, teacher.num_classes) if tokens else \
                np.random.default_rng(0).standard_normal((args.sequences * args.length, 64)).astype(np.float32)
            targets = int(targets_per_sequence(inputs).sum()) if tokens else len(inputs)
            samples = paired(scoring_arms(teacher, inputs), args.repeats)
            entry = {"target_tokens": targets, "samples": samples,
                     "tokens_per_s": {arm: statistics.median(targets / s[arm] for s in samples) for arm in samples[0]},
                     "topk_vs_bare": ratio(samples, "bare forward + topk", "records top-64"),
                     "sampled_vs_bare": ratio(samples, "bare forward + multinomial", "records 16 draws")}
            if tokens:
                entry["numpy_vs_bare"] = ratio(samples, "bare forward + topk", "numpy packer top-64 (before)")
            result["scoring"][label] = entry
            print(label, json.dumps({k: v for k, v in entry.items() if k != "samples"}, indent=1), flush=True)
            del teacher
    rows = 2048
    for vocab in (49_152, WIDE_VOCAB):
        samples = paired(packing_arms(vocab, rows, device), args.repeats)
        result["packing"][str(vocab)] = {
            "rows": rows, "samples": samples,
            "us_per_token": {arm: statistics.median(1e6 * s[arm] / rows for s in samples) for arm in samples[0]},
            "topk_speedup": ratio(samples, "numpy topk", "torch topk"),
            "sampled_speedup": ratio(samples, "numpy sampled", "torch sampled")}
        print(vocab, json.dumps(result["packing"][str(vocab)]["us_per_token"]), flush=True)
    write(result, args.name)


def _span(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f})"


def write(result: dict, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = ["# Teacher scoring: records against the bare forward", "",
             f"Machine: {result['machine']}; device {result['device']}, {result['torch_threads']} torch threads, "
             f"teachers in {result['dtype']}. "
             f"{result['sequences']} sequences of {result['length']} tokens (16 context, the rest targets), "
             f"{result['repeats']} repeats, arms back to back. `python -m benchmarks.teacher_scoring`.", "",
             "| model | arm | target tokens per second (median) |", "|---|---|---|"]
    for label, entry in result["scoring"].items():
        lines += [f"| {label} | {arm} | {rate:,.0f} |" for arm, rate in entry["tokens_per_s"].items()]
    lines += ["", "Records' tokens/s over the bare forward's (median of per-repeat ratios):", ""]
    for label, entry in result["scoring"].items():
        lines.append(f"- {label}: top-64 {_span(entry['topk_vs_bare'])}; 16 draws {_span(entry['sampled_vs_bare'])}"
                     + (f"; the numpy packer before: {_span(entry['numpy_vs_bare'])}" if "numpy_vs_bare" in entry
                        else ""))
    lines += ["", "Packing alone, microseconds per token (median), and the torch packer's speed-up over numpy:", "",
              "| V | numpy top-64 | torch top-64 | speed-up | numpy 16 draws | torch 16 draws | speed-up |",
              "|---|---|---|---|---|---|---|"]
    for vocab, entry in result["packing"].items():
        us = entry["us_per_token"]
        lines.append(f"| {int(vocab):,} | {us['numpy topk']:.1f} | {us['torch topk']:.1f} | "
                     f"{_span(entry['topk_speedup'])} | {us['numpy sampled']:.1f} | {us['torch sampled']:.1f} | "
                     f"{_span(entry['sampled_speedup'])} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
