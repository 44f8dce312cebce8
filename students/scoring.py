"""Test metrics of a student in training: every rank scores a slice of the test split (ZeRO-3
safe: every rank runs the same forwards) and the slices are gathered or all-reduced."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from ingest import Dataset, Split
from students.engine import mixed_precision
from students.evaluation import accuracy, embedding_agreement
from students.hooks import PhaseHook


def evaluate(engine: Any, dataset: Dataset, precision: str, rank: int, world_size: int,
             reference: Optional[np.ndarray], hooks: tuple[PhaseHook, ...] = (),
             model: Optional[torch.nn.Module] = None) -> dict[str, float]:
    """Test metrics over the whole test split. `reference`: the teachers' test embeddings
    (encoders). `model`: score this module (e.g. a post-training-quantized copy) instead of
    the engine's. `hooks` add their own metrics from the outputs (classifiers)."""
    test = dataset.test
    idx = np.array_split(np.arange(len(test.y)), world_size)[rank]
    forward = engine if model is None else model
    if dataset.kind == "lm":
        metrics = perplexity(forward, engine, test, idx, precision, world_size)
        if model is None:
            engine.train()
        return metrics
    forward.eval()
    with torch.no_grad(), mixed_precision(engine, precision):
        out = forward(torch.from_numpy(test.x[idx]).to(engine.device)).float().cpu().numpy()
    if model is None:
        engine.train()
    parts = [out]
    if dist.is_initialized():
        parts = [None] * world_size
        dist.all_gather_object(parts, out)
    outputs = np.concatenate(parts)
    if dataset.kind == "embedding":
        if reference is None:
            raise ValueError(f"dataset {dataset.name!r}: scoring a sentence encoder needs the teachers' test "
                             f"embeddings; the run has no teacher")
        return embedding_agreement(outputs, reference)
    metrics = {"test_accuracy": accuracy(outputs, test.y)}
    for hook in hooks:
        metrics.update(hook.evaluation_metrics(outputs, test))
    return metrics


def perplexity(forward, engine: Any, test: Split, idx: np.ndarray, precision: str, world_size: int,
               chunk: int = 64) -> dict[str, float]:
    """Held-out perplexity of a causal LM student over the target tokens of the whole test split
    (each rank scores its slice in chunks of sequences; the sums are all-reduced). Every rank
    runs the same number of forwards: under ZeRO-3 each forward gathers parameters from all."""
    forward.eval()
    lm = getattr(getattr(forward, "module", forward), "model", forward)  # the engine's, or a copy's, CausalLM
    sums = torch.zeros(2, dtype=torch.float64, device=engine.device)  # summed NLL, tokens
    forwards = max(1, -(-len(test.y) // (world_size * chunk)))
    with torch.no_grad(), mixed_precision(engine, precision):
        for rows in np.array_split(idx, forwards):
            nll, tokens = lm.summed_nll(torch.from_numpy(test.x[rows]).to(engine.device))
            sums[0] += nll
            sums[1] += tokens
    if dist.is_initialized():
        dist.all_reduce(sums)
    nll = float(sums[0] / sums[1].clamp(min=1))
    return {"test_perplexity": float(np.exp(nll)), "test_nll": nll, "test_tokens": int(sums[1])}
