"""Checkpoint folders on disk: written with an integrity manifest, checked before anything loads.

Each rank hashes the files it wrote into `integrity/rank<r>.json` (written last, so a rank cut
short leaves no manifest). A checkpoint is complete when every rank's manifest is there and
every file it lists has its size and SHA-256. DeepSpeed reads its `.pt` files with
`torch.load(weights_only=False)`, so before it does, every pickle in the folder is scanned
and any global outside torch's safe set and `ALLOWED_GLOBALS` refuses the checkpoint: a
pickle that would run code is never unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Optional, TypeVar

from cluster import DistilleryError

MANIFEST_DIR = "integrity"
# What DeepSpeed's ZeRO checkpoints hold besides tensors and containers (torch's safe set).
ALLOWED_GLOBALS = frozenset({
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
})


class CheckpointError(DistilleryError):
    """A checkpoint is incomplete, corrupted or unsafe to load."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.parent.name != MANIFEST_DIR)


def write_manifest(folder: Path, rank: int, world_size: int) -> None:
    """Record the size and hash of every file in `folder` (one rank's part of a checkpoint)."""
    files = {str(p.relative_to(folder)): [p.stat().st_size, _sha256(p)] for p in _files(folder)}
    (folder / MANIFEST_DIR).mkdir(exist_ok=True)
    (folder / MANIFEST_DIR / f"rank{rank}.json").write_text(json.dumps({"world_size": world_size, "files": files}))


def integrity_problem(folder: Path) -> Optional[str]:
    """Why the checkpoint in `folder` is incomplete or corrupted, or None when it is whole."""
    manifests = sorted((folder / MANIFEST_DIR).glob("rank*.json"))
    if not manifests:
        return f"no {MANIFEST_DIR}/rank*.json: the checkpoint was cut short before any rank finished writing it"
    world_sizes = set()
    for manifest in manifests:
        try:
            content = json.loads(manifest.read_text())
            world_sizes.add(content["world_size"])
            files = content["files"]
        except (ValueError, KeyError, TypeError) as exc:
            return f"{manifest.relative_to(folder)} is unreadable ({exc})"
        for name, (size, sha) in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} (listed by {manifest.name}) is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {manifest.name} recorded {size}: cut short"
            if _sha256(path) != sha:
                return f"{name} does not match the SHA-256 {manifest.name} recorded: corrupted"
    if len(world_sizes) != 1 or len(manifests) != next(iter(world_sizes)):
        return f"{len(manifests)} rank manifests for a checkpoint written by {sorted(world_sizes)} ranks"
    return None


Candidate = TypeVar("Candidate")


def first_complete(candidates: Iterable[Candidate], problem_of: Callable[[Candidate], Optional[str]],
                   label: Callable[[Candidate], str]) -> tuple[Optional[Candidate], list[str]]:
    """The first of `candidates` (newest first) with no integrity problem, or None, and the
    problems of the ones skipped before it, as `label: problem`."""
    problems = []
    for candidate in candidates:
        problem = problem_of(candidate)
        if problem is None:
            return candidate, problems
        problems.append(f"{label(candidate)}: {problem}")
    return None, problems


def refuse_unsafe_pickles(folder: Path) -> None:
    """Raise `CheckpointError` if a pickle in `folder` names a global that could run code."""
    import torch

    for path in _files(folder):
        if path.suffix not in {".pt", ".pth", ".bin", ".pkl"}:
            continue
        try:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) - ALLOWED_GLOBALS
        except Exception as exc:  # noqa: BLE001 - not a torch file at all
            raise CheckpointError(f"checkpoint file {path} is not a readable torch file ({exc}); "
                                  f"refusing to load it") from exc
        if unsafe:
            raise CheckpointError(f"checkpoint file {path} names {sorted(unsafe)}, outside the allowed globals of "
                                  f"a DeepSpeed checkpoint: loading it could run code, so it is refused. Delete "
                                  f"the checkpoint folder if you did not write it")
