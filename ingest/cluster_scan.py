"""The check of a streamed split as Ray tasks over its files, when the driver is connected to a
cluster: what a driver alone would do, spread over the nodes, with nothing per row on the driver.

One task a file (`data.source.scan_cpus` CPUs each) checks it (`file_scan.scan_file`: the
rows' columns, labels or token sequences, the counts, the rows' digest, the rows held out for
the test split), or finds it checked in its node's cache (`$DISTILLERY_CACHE_DIR/scans/`, under
the same key as the driver's cache), and returns what the file adds to the split: a few numbers
and the file's held-out rows. The rows' id keys never reach the driver: each task hands them to
the object store cut into buckets by key, and one task a bucket looks for an id that repeats,
across every file. A split's id check so costs the driver a few object references a file, its
fingerprint three integers a file (`row_hash.RowsDigest`).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from ingest.file_data import refuse_repeated_ids
from ingest.file_scan import FileScan, Progress, ScanSpec, cache_dir, read_scan, scan_file, write_scan

BUCKET_BYTES = 256 << 20  # about this much of the split's files per bucket of the id check
MAX_BUCKETS = 64


def bucket_count(infos: list[Any]) -> int:
    """Buckets of the id check: one per `BUCKET_BYTES` of files, at most `MAX_BUCKETS`."""
    return int(np.clip(sum(info.size or 0 for info in infos) // BUCKET_BYTES + 1, 1, MAX_BUCKETS))


def scan_task(filesystem: Any, name: str, spec: ScanSpec, key: Optional[str], buckets: int) -> tuple:
    """One file's scan on the node the task runs on (its cache first), its keys cut into `buckets`
    by key; returns (the scan without keys, whether it was cached, bucket 0, bucket 1, ...)."""
    cache = cache_dir()
    scan = read_scan(cache, key) if key else None
    cached = scan is not None
    if scan is None:
        scan = scan_file(filesystem, name, spec)
        if key and scan.error is None:
            write_scan(cache, key, scan)
    keys, scan.keys = scan.keys, None
    which = keys.view(np.uint64) % np.uint64(buckets)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(1, buckets, dtype=np.uint64))
    return (scan, cached, *np.split(keys[order], bounds))


def repeated_ids(*parts: np.ndarray) -> int:
    """How many keys of one bucket (its part of every file) occur more than once."""
    keys = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    _, counts = np.unique(keys, return_counts=True)
    return int((counts > 1).sum())


def scan_split_on_cluster(path: str, spec: ScanSpec, filesystem: Any, infos: list[Any], tokenizer: str,
                          progress: Progress = None) -> list[tuple[str, FileScan]]:
    """The scans of the split's files in file order, each made by a task, and the split's ids
    checked once across files by bucket; a `DataError` names what repeats."""
    import ray

    buckets = bucket_count(infos)
    task = ray.remote(scan_task).options(num_cpus=spec.source.scan_cpus, num_returns=2 + buckets,
                                         name="distillery-scan-file")
    pending = {}
    for info in infos:
        refs = task.remote(filesystem, info.path, spec, spec.cache_key(path, info, tokenizer), buckets)
        pending[refs[0]] = (info.path, refs[1], refs[2:])
    if progress is not None:
        progress(f"{path}: {len(infos)} files, checked by Ray tasks ({spec.source.scan_cpus:g} CPU each), "
                 f"ids by {buckets} bucket task{'s' * (buckets > 1)}")
    scans, parts, cached, started = {}, {}, 0, time.monotonic()
    waiting = list(pending)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        name, cached_ref, bucket_refs = pending[ready[0]]
        scans[name], parts[name] = ray.get(ready[0]), bucket_refs
        cached += bool(ray.get(cached_ref))
        done = len(scans)
        if progress is not None and (done == len(infos) or done % max(1, len(infos) // 10) == 0):
            progress(f"{path}: checked {done} of {len(infos)} files ({cached} from the nodes' caches, "
                     f"{time.monotonic() - started:.0f} s)")
    ordered = [(info.path, scans[info.path]) for info in infos]
    if all(scan.error is None for _, scan in ordered):  # else the first file's error is what the user sees
        check = ray.remote(repeated_ids).options(num_cpus=spec.source.scan_cpus, name="distillery-scan-ids")
        refuse_repeated_ids(path, sum(ray.get([check.remote(*[parts[info.path][b] for info in infos])
                                               for b in range(buckets)])))
    return ordered
