"""Soft-target records made where the teacher runs: log-softmax, top-k, tail mass and sampling
in torch on the teacher's device, chunk by chunk, so only the `[rows, k]` arrays of a record
leave it (`teachers.soft_targets` defines the record and its kinds; its numpy
`pack_soft_targets` is the reference these results match).

`pack_chunks` runs inside the teacher's lock (it queues device work right after the forward);
`DeviceRecord.to_host` copies the small arrays out and runs after the lock is released, so the
next request's forward starts meanwhile.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from ingest import BatchId
from teachers.soft_targets import TARGET_KINDS, SoftTargets

# Float32 elements of one chunk of logits packed at once: 64 MiB (a few hundred rows at V = 151,936).
CHUNK_ELEMENTS = 1 << 24
# Elements of one piece of a chunk that packing writes through its workspace (`_pieces`): 8 MiB
# on a CPU (its caches), 256 MiB elsewhere.
PIECE_ELEMENTS = {"cpu": 1 << 21, "other": 1 << 26}
_TAIL_FLOOR = 1e-12  # the numpy packer's floor on the mass outside the top k


@dataclass
class DeviceRecord:
    """One batch's record whose arrays still lie on the teacher's device (record dtypes)."""

    meta: dict
    arrays: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_host(self) -> SoftTargets:
        arrays = {name: value.cpu().numpy() for name, value in self.arrays.items()}
        features = {name: value.cpu().numpy() for name, value in self.features.items()}
        return SoftTargets(**self.meta, **arrays, features=features)


def batch_generator(batch_id: BatchId | str, device: torch.device) -> torch.Generator:
    """The generator of one batch's draws: seeded by the batch id, so a batch asked again (a
    resend, another replica, a resumed run) gets the same draws on the same device type."""
    return torch.Generator(device=device).manual_seed(zlib.crc32(str(batch_id).encode()))


def row_chunks(logits: torch.Tensor) -> Iterable[torch.Tensor]:
    """`logits` [B, C] in row chunks of about `CHUNK_ELEMENTS` elements."""
    return logits.split(max(1, CHUNK_ELEMENTS // max(1, logits.shape[-1])))


def pack_chunks(chunks: Iterable[torch.Tensor], *, num_classes: int, temperature: float, output_space: str,
                dense_max_classes: int, top_k: int, target_kind: str = "topk",
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The record arrays of the logits `chunks` (each [rows, C], any float dtype; rows in order),
    on their device: what `pack_soft_targets` makes of the same logits, in the same dtypes.
    Each chunk is cast to float32 on its own; `generator` draws the sampled kind."""
    if target_kind not in TARGET_KINDS:
        raise ValueError(f"target kind {target_kind!r} is unknown; known: {', '.join(TARGET_KINDS)}")
    if output_space.startswith("embedding:"):
        kind = "embedding"
    elif num_classes <= dense_max_classes:
        kind = "dense"
    else:
        kind = target_kind
    k = min(top_k, num_classes)
    workspace = _Workspace()
    parts = [_pack_rows(piece, kind, k, temperature, generator, workspace)
             for chunk in chunks for piece in _pieces(chunk)]
    if not parts:
        return _empty(kind, k, num_classes)
    return {name: torch.cat([part[name] for part in parts]) if len(parts) > 1 else parts[0][name]
            for name in parts[0]}


def _pieces(chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A chunk in pieces of at most `PIECE_ELEMENTS[device type]` elements, packed one after
    the other through one workspace (a fresh [rows, V] buffer per piece would cost a CPU its
    page faults, and any device its memory)."""
    limit = PIECE_ELEMENTS.get(chunk.device.type, PIECE_ELEMENTS["other"])
    return chunk.split(max(1, limit // max(1, chunk.shape[-1])))


class _Workspace:
    """Named float32 buffers, as large as the largest piece so far, reused by every piece."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, piece: torch.Tensor) -> torch.Tensor:
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[0] < piece.shape[0] or buffer.shape[1:] != piece.shape[1:] \
                or buffer.device != piece.device:
            buffer = self.buffers[name] = torch.empty(piece.shape, dtype=torch.float32, device=piece.device)
        return buffer[:piece.shape[0]]


def _pack_rows(logits: torch.Tensor, kind: str, k: int, temperature: float, generator: torch.Generator | None,
               workspace: _Workspace) -> dict[str, torch.Tensor]:
    """One piece's arrays. z = logits / T in float32 (a copy only where the logits are not that
    already); its log-softmax (or softmax, for draws) goes to the workspace in one fused pass, and
    only the [rows, k] results are new tensors."""
    if kind == "embedding":
        return {"logits": logits.float()}
    z = logits
    if logits.dtype != torch.float32 or temperature != 1.0:
        z = workspace.get("scaled", logits).copy_(logits)
        if temperature != 1.0:
            z.div_(temperature)
    if kind == "dense":
        return {"logprob": torch.log_softmax(z, dim=-1)}
    if kind == "sampled":
        probs = torch.softmax(z, dim=-1, out=workspace.get("out", logits))
        idx = torch.multinomial(probs, k, replacement=True, generator=generator).sort(dim=-1).values
        return {"topk_idx": idx.to(torch.int32), "topk_logprob": probs.gather(-1, idx).log().to(torch.float16),
                "sample_weight": torch.full(idx.shape, 1.0 / k, dtype=torch.float16, device=idx.device)}
    top, idx = top_k(torch.log_softmax(z, dim=-1, out=workspace.get("out", logits)), k)
    wide = torch.float32 if top.device.type == "mps" else torch.float64  # MPS has no float64
    mass = top.to(wide).exp().sum(-1)
    tail = (1.0 - mass).clamp_min(_TAIL_FLOOR).log().float()
    return {"topk_idx": idx.to(torch.int32), "topk_logprob": top.to(torch.float16), "tail_logprob": tail}


def top_k(z: torch.Tensor, k: int, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """`z.topk(k)` of rows [rows, V] (sorted), in two short passes: the k blocks of `block`
    columns with the largest maxima hold the top k (any other block's elements are at most the
    k-th block maximum, itself at most the k-th largest element), so one top-k runs over their
    k x block elements (and the last columns that fill no block) instead of V."""
    rows, width = z.shape
    whole = width - width % block
    if whole < 4 * k * block or z.stride(-1) != 1:
        return z.topk(k, dim=-1)
    blocks = z.as_strided((rows, whole // block, block), (z.stride(0), block, 1))
    best = blocks.amax(dim=-1).topk(k, dim=-1).indices  # [rows, k]
    candidates = blocks[torch.arange(rows, device=z.device)[:, None], best].reshape(rows, k * block)
    if whole < width:
        candidates = torch.cat([candidates, z[:, whole:]], dim=1)
    top, local = candidates.topk(k, dim=-1)
    in_block = local.clamp_max(k * block - 1)
    idx = torch.where(local < k * block, best.gather(1, in_block // block) * block + in_block % block,
                      whole + local - k * block)
    return top, idx


def _empty(kind: str, k: int, num_classes: int) -> dict[str, torch.Tensor]:
    """The arrays of a record with no rows (a batch whose sequences have no target)."""
    if kind in ("dense", "embedding"):
        return {"logprob" if kind == "dense" else "logits": torch.zeros((0, num_classes))}
    second = ("sample_weight", torch.zeros((0, k), dtype=torch.float16)) if kind == "sampled" else \
        ("tail_logprob", torch.zeros(0))
    return {"topk_idx": torch.zeros((0, k), dtype=torch.int32),
            "topk_logprob": torch.zeros((0, k), dtype=torch.float16), second[0]: second[1]}


def split_features(features: dict[str, torch.Tensor], bounds: list[int]) -> list[dict[str, torch.Tensor]]:
    """Hooked features [N, ...] cut at the row `bounds` into one dict per batch, in float16."""
    cut = {name: value.to(torch.float16).tensor_split(bounds) for name, value in features.items()}
    return [{name: parts[i] for name, parts in cut.items()} for i in range(len(bounds) + 1)]
