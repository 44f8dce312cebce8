"""The check of a streamed split before training, file by file, remembered.

A Parquet, JSONL, CSV or text split is checked file by file (`ingest.file_scan.scan_file`: the
rows' ids, columns, labels or token sequences, what each file adds to the counts and the
fingerprint, and the rows it holds out for the test split). A driver connected to a cluster
(`distillery run`, `precompute`) checks the files in Ray tasks (`ingest.cluster_scan`), the ids across files
by hash bucket, and keeps a few numbers a file; a process without Ray (`distillery check`)
checks them itself, in a pool of processes when the files left to check hold over 256 MiB
(`data.source.scan_workers`), and compares the ids' keys (8 bytes a row) at the end. An image
folder or a saved dataset is checked in one pass. Each file's result is kept in the cache of
the node that checked it, so a restarted or resumed run, or a run after its `precompute`,
checks only the files that changed. The results are merged in the split's file order: counts,
fingerprint, notes and held-out rows are what one pass in order gives. Which of the two runs is
the caller's choice (`load_dataset(on_cluster=...)`), never guessed from whether Ray is up: a
process inside Ray (a train worker, the orchestrator) checks in place unless told.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional

import numpy as np

from ingest.cluster_scan import scan_split_on_cluster
from ingest.config import SourceConfig
from ingest.file_data import HeldOut, check_unique_keys, same_width
from ingest.file_read import same_schema, split_chunks
from ingest.file_scan import (FileScan, Progress, ScanSpec, added_counts, cache_dir, read_scan, scan_file, scan_rows,
                              write_scan)
from ingest.row_hash import RowsDigest
from ingest.source_paths import DataError, source_file_infos
from ingest.splits import Split, StreamedSplit

PARALLEL_BYTES = 256 << 20


def scan_split(path: str, source: SourceConfig, num_classes: Optional[int], template: Optional[Split] = None,
               notes: Optional[list[str]] = None, *, held_out: Optional[HeldOut] = None,
               progress: Progress = None, on_cluster: bool = False) -> StreamedSplit:
    """Check every row of a classifier's split without keeping it, as `load_source` checks a
    split it holds (columns, types, vector lengths, labels, unique ids, the width of `template`
    and one schema): its size, rows per class and fingerprint. `num_classes` None: the labels
    decide it. `held_out`: the split is `train` less the test rows `test_fraction` holds out,
    which it collects. `on_cluster`: the files are checked by Ray tasks (`ingest.cluster_scan`)."""
    spec = ScanSpec(source, num_classes, hold_out=held_out is not None,
                    keep_held=held_out is not None and held_out.keep)
    scans = scan_split_files(path, spec, progress, on_cluster)
    counts = np.zeros(num_classes or 0, np.int64)
    for name, scan in merged(scans, held_out, notes):
        if scan.template is not None:
            template = template or scan.template
            same_width(name, scan.template, template)
        counts = added_counts(counts, scan.counts)
    space = f"classes:{num_classes or len(counts)}"
    return StreamedSplit(int(counts.sum()), counts, fingerprint(path, space, scans), template=template)


def merged(scans: list[tuple[str, FileScan]], held_out: Optional[HeldOut],
           notes: Optional[list[str]]) -> list[tuple[str, FileScan]]:
    """`scans` after the checks across files (one schema), their notes added to `notes` and
    their held-out rows to `held_out`, in file order."""
    files, schema = [name for name, _ in scans], None
    for name, scan in scans:
        if scan.schema is not None:
            schema = same_schema(scan.schema, schema, name, files)
        if scan.error is not None:
            raise DataError(scan.error)
        if notes is not None:
            notes += scan.notes
        if held_out is not None and held_out.keep:
            held_out.add(scan.held, name)
    return scans


def fingerprint(path: str, space: str, scans: list[tuple[str, FileScan]]) -> str:
    """The fingerprint of the split's rows; a `DataError` when it has none or an id repeats."""
    if not any(scan.rows for _, scan in scans):
        raise DataError(f"{path}: the split has no rows")
    if any(scan.keys is not None for _, scan in scans):  # checked here (else where the files were scanned)
        check_unique_keys([scan.keys for _, scan in scans], path)
    return sum((scan.digest for _, scan in scans), RowsDigest()).fingerprint(space)


def scan_split_files(path: str, spec: ScanSpec, progress: Progress = None, on_cluster: bool = False
                     ) -> list[tuple[str, FileScan]]:
    """The scans of the split at `path`, in its file order: each file's from the cache or
    checked now (by Ray tasks `on_cluster`, else here: in a pool of processes when the files left
    to check are large); an image
    folder or a saved dataset in one pass, as one."""
    if spec.source.format in ("images", "hf_dataset"):
        return [(path, scan_rows(split_chunks(path, spec.source), spec, path))]
    filesystem, infos = source_file_infos(path)
    tokenizer = _tokenizer_hash(spec)
    if on_cluster:
        return scan_split_on_cluster(path, spec, filesystem, infos, tokenizer, progress)
    cache = cache_dir()
    scans: dict[str, FileScan] = {}
    todo = []
    for info in infos:
        key = spec.cache_key(path, info, tokenizer)
        cached = read_scan(cache, key) if key else None
        if cached is not None:
            scans[info.path] = cached
        else:
            todo.append((info, key))
    workers = _workers(spec.source.scan_workers, [info for info, _ in todo])
    if progress is not None:
        progress(f"{path}: {len(infos)} files, {len(scans)} checked before (cache), {len(todo)} to check"
                 + (f" with {workers} processes" if workers > 1 else ""))
    started, done = time.monotonic(), 0

    def finished(info: Any, key: Optional[str], scan: FileScan) -> None:
        nonlocal done
        scans[info.path] = scan
        if key and scan.error is None:
            write_scan(cache, key, scan)
        done += 1
        if progress is not None and (done == len(todo) or done % max(1, len(todo) // 10) == 0):
            progress(f"{path}: checked {done} of {len(todo)} files ({time.monotonic() - started:.0f} s)")

    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=_spawn()) as pool:
            futures = [(info, key, pool.submit(scan_file, filesystem, info.path, spec)) for info, key in todo]
            for info, key, future in futures:
                finished(info, key, future.result())
    else:
        for info, key in todo:
            finished(info, key, scan_file(filesystem, info.path, spec))
            if scans[info.path].error is not None:
                break  # the files after it are not checked
    return [(info.path, scans[info.path]) for info in infos if info.path in scans]


def _workers(asked: Optional[int], todo: list) -> int:
    if asked is not None:
        return max(1, min(asked, len(todo)))
    if sum(info.size or 0 for info in todo) < PARALLEL_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, len(todo)))


def _spawn():
    import multiprocessing

    return multiprocessing.get_context("spawn")  # not fork: the driver may hold threads (Ray, tokenizers)


def _tokenizer_hash(spec: ScanSpec) -> str:
    """The vocabulary a scan tokenizes with (a language model's, or a classifier's text inputs)."""
    from ingest.text_inputs import cached_tokenizer
    from ingest.tokenizer import tokenizer_hash

    name = spec.data.tokenizer if spec.data is not None else spec.source.text_tokenizer[0]
    return tokenizer_hash(cached_tokenizer(name)) if name else ""


