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
    shard index (or the single file's safetensors header) and every weight file's size. A
    folder on object storage (a URI) is read where it lies: its small files and headers only."""
    from pyarrow import fs as pafs

    from cluster import filesystem_for, is_uri

    if not is_uri(folder) and not Path(folder).is_dir():
        return f"hub:{folder}"
    filesystem, root = filesystem_for(folder)
    files = {info.base_name: info for info in filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
             if info.type == pafs.FileType.File}
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        if name in files:
            with filesystem.open_input_file(files[name].path) as handle:
                digest.update(handle.read())
    for name in sorted(n for n in files if n.endswith(".safetensors")):
        with filesystem.open_input_file(files[name].path) as handle:
            header = handle.read(8)
            digest.update(name.encode() + str(files[name].size).encode())
            digest.update(handle.read(min(int.from_bytes(header, "little"), 1 << 24)))
    return "ckpt-" + digest.hexdigest()[:16]
