"""A model's version from its weights files (every byte), or a pretrained checkpoint's from its
metadata: the key of teacher caches, stores and records."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_version(*paths: str | Path) -> str:
    """A teacher's model version: the first 12 hex digits of the sha256 of its weights file
    (of the files in order, for weights split over several)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def checkpoint_version(folder: str) -> str:
    """A pretrained checkpoint's version from its metadata, not its bytes: the config, the
    shard index (or the single file's safetensors header) and every weight file's size."""
    root = Path(folder)
    if not root.is_dir():
        return f"hub:{folder}"
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        if (root / name).is_file():
            digest.update((root / name).read_bytes())
    for file in sorted(root.glob("*.safetensors")):
        with open(file, "rb") as handle:
            header = handle.read(8)
            digest.update(file.name.encode() + str(file.stat().st_size).encode())
            digest.update(handle.read(min(int.from_bytes(header, "little"), 1 << 24)))
    return "ckpt-" + digest.hexdigest()[:16]
