"""Malformed soft-target payloads: truncations, bit flips, absurd lengths, garbage.

`run_cases(n, seed)` feeds `n` mutated payloads to the decoders and counts the outcomes; a
case passes when the decoder either raises `SoftTargetDecodeError` or returns a record that
passes every value check. Used by `tests/unit/test_fuzz.py` (a few hundred cases) and by
`python -m benchmarks.transport` (at least 10,000, in a child process so that a crash would
be counted, not fatal).
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from typing import Callable, Iterator

import numpy as np

from teachers.arrow_codec import decode, decode_inputs, encode, encode_inputs
from teachers.errors import SoftTargetDecodeError
from teachers.soft_targets import SoftTargets, pack_soft_targets

ABSURD = [0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 1 << 40, (1 << 63) - 1, 0, 1, 0xFFFFFFFFFFFFFFFF]


def seed_payloads() -> dict[str, tuple[bytes, Callable[[bytes], object]]]:
    """Valid payloads of every kind, each with the decoder that reads it."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 200)).astype(np.float32)
    meta = dict(teacher="fuzz", teacher_version="v1", temperature=2.0, output_space="classes:200")
    dense = pack_soft_targets(logits, batch_id="b0", dense_max_classes=1024, top_k=8, **meta)
    topk = pack_soft_targets(logits, batch_id="b1", dense_max_classes=10, top_k=8, **meta)
    feats = pack_soft_targets(logits, batch_id="b2", dense_max_classes=10, top_k=4, **meta)
    feats.features["hidden"] = rng.normal(size=(16, 3, 4)).astype(np.float16)
    read_inputs = lambda p: decode_inputs(p, in_features=64, source="fuzz inputs")  # noqa: E731
    return {
        "dense": (encode(dense), decode),
        "topk": (encode(topk), decode),
        "features": (encode(feats), decode),
        "inputs": (encode_inputs(rng.random((16, 64), dtype=np.float32)), read_inputs),
    }


def mutate(payload: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    data = bytearray(payload)
    kind = rng.integers(6)
    if kind == 0:
        return "truncate", bytes(data[: rng.integers(0, len(data))])
    if kind == 1:
        for _ in range(rng.integers(1, 9)):
            pos = rng.integers(len(data))
            data[pos] ^= 1 << int(rng.integers(8))
        return "bit flip", bytes(data)
    if kind == 2:
        value = ABSURD[rng.integers(len(ABSURD))]
        width = 8 if value > 0xFFFFFFFF or rng.integers(2) else 4
        pos = int(rng.integers(0, len(data) - width))
        data[pos:pos + width] = struct.pack("<Q" if width == 8 else "<I", value & ((1 << (8 * width)) - 1))
        return "absurd length", bytes(data)
    if kind == 3:
        pos = int(rng.integers(len(data)))
        return "insert", bytes(data[:pos] + rng.bytes(int(rng.integers(1, 64))) + data[pos:])
    if kind == 4:
        a, b = sorted(rng.integers(0, len(data), size=2))
        return "duplicate", bytes(data[:b] + data[a:b] + data[b:])
    return "garbage", rng.bytes(int(rng.integers(0, 512)))


def cases(n: int, seed: int) -> Iterator[tuple[str, str, bytes, Callable[[bytes], object]]]:
    rng = np.random.default_rng(seed)
    seeds = list(seed_payloads().items())
    for i in range(n):
        name, (payload, reader) = seeds[i % len(seeds)]
        mutation, data = mutate(payload, rng)
        yield name, mutation, data, reader


def run_cases(n: int, seed: int = 0) -> dict[str, object]:
    """Outcome counts: refused (clear error), accepted (still a valid record), failed (anything else)."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    slowest = 0.0
    for name, mutation, data, reader in cases(n, seed):
        start = time.perf_counter()
        try:
            result = reader(data)
            if isinstance(result, SoftTargets) or isinstance(result, np.ndarray):
                outcomes["accepted"] += 1
        except SoftTargetDecodeError:
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - anything but a clear error is a finding
            outcomes["failed"] += 1
            failures.append(f"{name}/{mutation}: {type(exc).__name__}: {exc}"[:300])
        slowest = max(slowest, time.perf_counter() - start)
    return {"cases": n, **{k: outcomes[k] for k in ("refused", "accepted", "failed")},
            "slowest_case_s": slowest, "failures": failures[:20]}
