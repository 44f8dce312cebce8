"""The driver's check of a streamed split, one file at a time, in parallel and remembered.

A Parquet, JSONL, CSV or text split is checked file by file (`scan_file`: the rows' ids,
columns, labels or token sequences, what each file adds to the counts and the fingerprint, and
the rows it holds out for the test split). Files left to check that hold over 256 MiB in all are
checked by a pool of processes (`data.source.scan_workers`); an image folder or a saved
dataset is checked in one pass. Each file's result is kept in the driver's cache
(`$DISTILLERY_CACHE_DIR/scans/`) under the file's location, size and modification time and the
settings that shape it, so a restarted or resumed run, or a run after its `precompute`, checks
only the files that changed. The results are merged in the split's file order: counts,
fingerprint, notes and held-out rows are what one pass in order gives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pyarrow as pa

from cluster import default_cache_dir, mark_used
from ingest.config import DataConfig, SourceConfig
from ingest.file_data import HeldOut, check_labels, check_unique_keys, rows_split, same_width
from ingest.file_read import SourceRows, file_chunks, same_schema, split_chunks
from ingest.source_paths import DataError, source_file_infos
from ingest.splits import Split, StreamedSplit, row_hashes, rows_fingerprint
from ingest.streamed import row_numbers

SCAN_VERSION = 1  # bump when what a file's scan holds or checks changes: older results are not read
PARALLEL_BYTES = 256 << 20
Progress = Optional[Callable[[str], None]]


def class_chunk(rows: SourceRows, spec: "ScanSpec", out: "FileScan", where: str) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's chunk: its columns as the in-memory path reads them, widths, labels, and
    what it adds to the counts; its rows' keys and hashes."""
    split = rows_split(rows, spec.source, out.notes)
    out.template = out.template or split.rows(slice(0, 0))
    same_width(rows.files[0], split, out.template)
    check_labels(split, spec.num_classes or np.iinfo(np.int64).max, rows.files[0], split.ids)
    out.counts = added_counts(out.counts, np.bincount(split.y))
    out.rows += len(split.y)
    return row_numbers(split.ids), row_hashes(split.ids, split.teacher_inputs, split.y)


def added_counts(counts: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Rows per class summed, the shorter array padded with zeros."""
    width = max(len(counts), len(more))
    return np.pad(counts, (0, width - len(counts))) + np.pad(more, (0, width - len(more)))


@dataclass(frozen=True)
class ScanSpec:
    """What a file's scan checks and keeps: `num_classes` bounds a classifier's labels (None:
    any label >= 0); `hold_out` drops the rows `test_fraction` holds out of train, and keeps
    them with `keep_held`; `chunk` checks a chunk (`class_chunk`, or a language model's, which
    tokenizes with `data`'s tokenizer and sequence length)."""

    source: SourceConfig
    num_classes: Optional[int] = None
    hold_out: bool = False
    keep_held: bool = False
    data: Optional[DataConfig] = None
    chunk: Callable[..., tuple[np.ndarray, np.ndarray]] = class_chunk

    def cache_key(self, split: str, info: Any, tokenizer: str) -> Optional[str]:
        """The key of the scan of a file of `split` (its path or URI, with the store's address)
        under these settings; None when the file's version is unknown."""
        if info.mtime_ns is None or info.size is None:
            return None
        settings = {"version": SCAN_VERSION, "split": split, "file": info.path, "size": info.size,
                    "mtime_ns": info.mtime_ns,
                    "source": self.source.model_dump(mode="json", exclude={"train", "test", "transfer",
                                                                            "scan_workers", "stream"}),
                    "num_classes": self.num_classes, "hold_out": self.hold_out, "keep_held": self.keep_held,
                    "tokenizer": tokenizer, "text_inputs": self.source.text_tokenizer,
                    "sequence_length": self.data.sequence_length if self.data is not None else None,
                    "chunk": f"{self.chunk.__module__}.{self.chunk.__qualname__}"}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class FileScan:
    """One file's (or an unsplit split's) contribution to the scan of its split."""

    rows: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows per label
    target_tokens: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # `row_numbers` of the ids
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # `row_hashes`
    notes: list[str] = field(default_factory=list)
    schema: Optional[pa.Schema] = None  # the file's columns (None: no chunk; text lines have none)
    template: Optional[Split] = None  # a classifier's: no rows, the file's shapes
    held: Optional[pa.Table] = None  # the rows held out for the test split (with `keep_held`)
    error: Optional[str] = None  # the `DataError` that stopped it, raised in file order when merged


def scan_rows(chunks: Iterable[SourceRows], spec: ScanSpec, where: str) -> FileScan:
    """The scan of `chunks` (one file's, or a whole split's), every row checked as the in-memory
    path checks it; `where` names them in errors about repeated ids."""
    held = HeldOut(keep=spec.keep_held) if spec.hold_out else None
    out, keys, hashes = FileScan(), [], []
    try:
        for rows in chunks:
            if out.schema is None and spec.source.format not in ("text", "images", "hf_dataset"):
                out.schema = rows.table.drop_columns(["__id"]).schema.remove_metadata()
            if held is not None:
                rows = held.split_off(rows, spec.source)
            if rows.table.num_rows == 0:
                continue
            chunk_keys, chunk_hashes = spec.chunk(rows, spec, out, where)
            keys.append(chunk_keys)
            hashes.append(chunk_hashes)
    except DataError as exc:  # after the schema: a file of another schema is refused for that first
        out.error = str(exc)
    out.keys = np.concatenate(keys) if keys else out.keys
    out.hashes = np.concatenate(hashes) if hashes else out.hashes
    if held is not None and held.tables:
        out.held = pa.concat_tables(held.tables)
    return out


def scan_split(path: str, source: SourceConfig, num_classes: Optional[int], template: Optional[Split] = None,
               notes: Optional[list[str]] = None, *, held_out: Optional[HeldOut] = None,
               progress: Progress = None) -> StreamedSplit:
    """Check every row of a classifier's split without keeping it, as `load_source` checks a
    split it holds (columns, types, vector lengths, labels, unique ids, the width of `template`
    and one schema): its size, rows per class and fingerprint. `num_classes` None: the labels
    decide it. `held_out`: the split is `train` less the test rows `test_fraction` holds out,
    which it collects."""
    spec = ScanSpec(source, num_classes, hold_out=held_out is not None,
                    keep_held=held_out is not None and held_out.keep)
    scans = scan_split_files(path, spec, progress)
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
    check_unique_keys([scan.keys for _, scan in scans], path)
    return rows_fingerprint(space, np.concatenate([scan.hashes for _, scan in scans]))


def scan_file(filesystem: Any, name: str, spec: ScanSpec) -> FileScan:
    """The scan of one file of a split (run in the driver or in a process of its pool)."""
    return scan_rows(file_chunks(filesystem, name, spec.source), spec, name)


def scan_split_files(path: str, spec: ScanSpec, progress: Progress = None) -> list[tuple[str, FileScan]]:
    """The scans of the split at `path`, in its file order: each file's from the cache or
    checked now (in a pool of processes when the files left to check are large); an image
    folder or a saved dataset in one pass, as one."""
    if spec.source.format in ("images", "hf_dataset"):
        return [(path, scan_rows(split_chunks(path, spec.source), spec, path))]
    filesystem, infos = source_file_infos(path)
    tokenizer = _tokenizer_hash(spec)
    cache = _cache_dir()
    scans: dict[str, FileScan] = {}
    todo = []
    for info in infos:
        key = spec.cache_key(path, info, tokenizer)
        cached = _read(cache, key) if key else None
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
            _write(cache, key, scan)
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


def _cache_dir() -> Path:
    return Path(default_cache_dir()) / "scans"


def _read(cache: Path, key: str) -> Optional[FileScan]:
    """A file's scan kept under `key`; None when absent or unreadable (it is checked again)."""
    try:
        with np.load(cache / f"{key}.npz", allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            template = None
            if meta["template"]:
                arrays = {name[len("template/"):]: saved[name] for name in saved.files if name.startswith("template/")}
                columns = {name[len("column/"):]: value for name, value in arrays.items() if name.startswith("column/")}
                template = Split(arrays["x"], arrays["y"], columns, arrays.get("teacher_x"), ids=arrays["ids"])
            scan = FileScan(meta["rows"], saved["counts"], meta["target_tokens"], saved["keys"], saved["hashes"],
                            meta["notes"], _schema(saved["schema"]), template)
        if meta["held"]:
            with pa.memory_map(str(cache / f"{key}.held.arrow")) as source:
                scan.held = pa.ipc.open_file(source).read_all()
        mark_used(cache / f"{key}.npz")  # `distillery cache --prune-older-than` keeps what runs read
        return scan
    except (OSError, ValueError, KeyError, pa.ArrowInvalid):
        return None


def _write(cache: Path, key: str, scan: FileScan) -> None:
    """Keep `scan` under `key` (written to a temporary name, then renamed: a reader never sees
    half of it)."""
    cache.mkdir(parents=True, exist_ok=True)
    if scan.held is not None:
        _replace(cache / f"{key}.held.arrow", _ipc_bytes(scan.held))
    arrays = {}
    if scan.template is not None:
        t = scan.template
        arrays = {"template/x": t.x, "template/y": t.y, "template/ids": np.asarray(t.ids if t.ids is not None else [],
                                                                                   dtype=str),
                  **{f"template/column/{n}": v for n, v in t.columns.items()}}
        if t.teacher_x is not None:
            arrays["template/teacher_x"] = t.teacher_x
    meta = {"rows": scan.rows, "target_tokens": scan.target_tokens, "notes": scan.notes,
            "template": scan.template is not None, "held": scan.held is not None}
    schema = np.frombuffer(scan.schema.serialize().to_pybytes(), np.uint8) if scan.schema is not None else \
        np.zeros(0, np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), counts=scan.counts, keys=scan.keys, hashes=scan.hashes,
             schema=schema, **arrays)
    _replace(cache / f"{key}.npz", buffer.getvalue())


def _schema(saved: np.ndarray) -> Optional[pa.Schema]:
    return pa.ipc.read_schema(pa.py_buffer(saved.tobytes())) if len(saved) else None


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
