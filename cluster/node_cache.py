"""A node's own caches under `$DISTILLERY_CACHE_DIR`, what they hold, and pruning what no run
has used lately (`distillery cache`).

Three caches grow with what runs read and nothing else removes from them:
- `mapped/`: offline stores' shards as Arrow files every worker of the node maps (about a
  store's decoded size);
- `fetched/`: files downloaded once per node from object storage (teacher weights, snapshots);
- `scans/`: the driver's checks of a streamed source's files.
Each entry's modification time is its last use (the code that reads an entry touches it), so
an entry older than the given age has not been read by any run since. Removing an entry that a
process still has open or mapped is safe on Linux (the process keeps its pages); the next run
that needs it makes it again. The teacher cache (`teachers/`) and runs' working copies are
never pruned here.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

KINDS = {"mapped": "offline stores' memory-mapped copies",
         "fetched": "files downloaded from object storage",
         "scans": "the driver's checks of streamed files"}


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    paths: tuple[Path, ...]  # a fetched file's folder, or the files of one key (`<key>.*`)
    bytes: int
    last_used: float  # seconds since the epoch: the newest modification among them


def mark_used(*paths: str | Path) -> None:
    """Mark cache entries as used now (their modification time); a vanished one is left alone."""
    for path in paths:
        try:
            os.utime(path)
        except OSError:
            pass


def cache_entries(root: str | Path, kinds: Iterable[str] = tuple(KINDS)) -> list[CacheEntry]:
    """The entries of `kinds` under the cache folder `root`: each folder, and each key's files
    (a copy with its lock file, a scan with its held-out rows, a file being written)."""
    out = []
    for kind in kinds:
        folder = Path(root) / kind
        groups: dict[str, list[Path]] = {}
        for path in (folder.iterdir() if folder.is_dir() else ()):
            groups.setdefault(path.name if path.is_dir() else path.name.split(".", 1)[0], []).append(path)
        for paths in groups.values():
            try:
                files = [f.stat() for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
                folders = [p.stat() for p in paths if p.is_dir()]
            except OSError:  # removed meanwhile
                continue
            out.append(CacheEntry(kind, tuple(paths), sum(f.st_size for f in files),
                                  max((s.st_mtime for s in files or folders), default=0.0)))
    return out


def prune_cache(root: str | Path, older_than_s: float, kinds: Iterable[str] = tuple(KINDS), dry_run: bool = False,
                now: Optional[float] = None) -> list[CacheEntry]:
    """Remove the entries of `kinds` unused for `older_than_s` seconds; return them (with
    `dry_run`, only return them)."""
    return _prune(cache_entries(root, kinds), older_than_s, dry_run, now)


def _prune(entries: list[CacheEntry], older_than_s: float, dry_run: bool, now: Optional[float] = None
           ) -> list[CacheEntry]:
    now = time.time() if now is None else now
    removed = [e for e in entries if now - e.last_used >= older_than_s]
    if not dry_run:
        for entry in removed:
            for path in entry.paths:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    return removed


def cache_summary(entries: list[CacheEntry]) -> dict[str, dict[str, float]]:
    """Entries and bytes per kind."""
    out = {kind: {"entries": 0, "bytes": 0} for kind in KINDS}
    for entry in entries:
        out[entry.kind]["entries"] += 1
        out[entry.kind]["bytes"] += entry.bytes
    return out


def cache_report(older_than_days: Optional[float] = None, dry_run: bool = False,
                 kinds: Iterable[str] = tuple(KINDS)) -> dict:
    """This node's caches (`default_cache_dir()`): entries and bytes per kind, and, given an age
    in days, what was pruned (with `dry_run`, what would be)."""
    import socket

    from cluster.paths import default_cache_dir

    root = Path(default_cache_dir())
    entries = cache_entries(root, kinds)
    removed = [] if older_than_days is None else _prune(entries, older_than_days * 86_400.0, dry_run)
    gone = set(removed)
    return {"node": socket.gethostname(), "root": str(root), "removed": cache_summary(removed),
            "kept": cache_summary([e for e in entries if e not in gone])}
