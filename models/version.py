"""A model's version from its weights files, the key of teacher caches, stores and records."""

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
