"""One file's check of a streamed split (`scan_file`): the rows' ids, columns, labels or token
sequences, what the file adds to the counts and the fingerprint, and the rows it holds out for
the test split; kept under the file's location, size and modification time and the settings
that shape it in `$DISTILLERY_CACHE_DIR/scans/` of the node that made it, so a restart checks
only the files that changed."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pyarrow as pa

from cluster import default_cache_dir, mark_used
from ingest.config import DataConfig, SourceConfig
from ingest.file_data import HeldOut, check_labels, rows_split, same_width
from ingest.file_read import SourceRows, file_chunks
from ingest.row_hash import RowsDigest, row_hashes, row_keys
from ingest.source_paths import DataError
from ingest.splits import Split

Progress = Optional[Callable[[str], None]]
SCAN_VERSION = 2  # bump when what a file's scan holds or checks changes: older results are not read
# 2: rows' digests (`ingest.row_hash`) instead of their hashes, keys by `row_keys`


def class_chunk(rows: SourceRows, spec: "ScanSpec", out: "FileScan", where: str) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's chunk: its columns as the in-memory path reads them, widths, labels, and
    what it adds to the counts; its rows' keys and hashes."""
    split = rows_split(rows, spec.source, out.notes)
    out.template = out.template or split.rows(slice(0, 0))
    same_width(rows.files[0], split, out.template)
    check_labels(split, spec.num_classes or np.iinfo(np.int64).max, rows.files[0], split.ids)
    out.counts = added_counts(out.counts, np.bincount(split.y))
    out.rows += len(split.y)
    keys = row_keys(split.ids)
    return keys, row_hashes(split.ids, split.teacher_inputs, split.y, keys)


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
                                                                            "scan_workers", "scan_cpus", "read_cpus",
                                                                            "shuffle_buffer_rows", "stream"}),
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
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # `row_keys` of the ids
    digest: RowsDigest = field(default_factory=RowsDigest)  # its rows' `row_hashes`, summed
    notes: list[str] = field(default_factory=list)
    schema: Optional[pa.Schema] = None  # the file's columns (None: no chunk; text lines have none)
    template: Optional[Split] = None  # a classifier's: no rows, the file's shapes
    held: Optional[pa.Table] = None  # the rows held out for the test split (with `keep_held`)
    error: Optional[str] = None  # the `DataError` that stopped it, raised in file order when merged


def scan_rows(chunks: Iterable[SourceRows], spec: ScanSpec, where: str) -> FileScan:
    """The scan of `chunks` (one file's, or a whole split's), every row checked as the in-memory
    path checks it; `where` names them in errors about repeated ids."""
    held = HeldOut(keep=spec.keep_held) if spec.hold_out else None
    out, keys = FileScan(), []
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
            out.digest += RowsDigest.of(chunk_hashes)
    except DataError as exc:  # after the schema: a file of another schema is refused for that first
        out.error = str(exc)
    out.keys = np.concatenate(keys) if keys else out.keys
    if held is not None and held.tables:
        out.held = pa.concat_tables(held.tables)
    return out


def scan_file(filesystem: Any, name: str, spec: ScanSpec) -> FileScan:
    """The scan of one file of a split (run in the driver or in a process of its pool)."""
    return scan_rows(file_chunks(filesystem, name, spec.source), spec, name)


def cache_dir() -> Path:
    return Path(default_cache_dir()) / "scans"


def read_scan(cache: Path, key: str) -> Optional[FileScan]:
    """A file's scan kept under `key`; None when absent or unreadable (it is checked again)."""
    try:
        with np.load(cache / f"{key}.npz", allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            template = None
            if meta["template"]:
                arrays = {name[len("template/"):]: saved[name] for name in saved.files if name.startswith("template/")}
                columns = {name[len("column/"):]: value for name, value in arrays.items() if name.startswith("column/")}
                template = Split(arrays["x"], arrays["y"], columns, arrays.get("teacher_x"), ids=arrays["ids"])
            scan = FileScan(meta["rows"], saved["counts"], meta["target_tokens"], saved["keys"],
                            RowsDigest(*meta["digest"]), meta["notes"], _schema(saved["schema"]), template)
        if meta["held"]:
            with pa.memory_map(str(cache / f"{key}.held.arrow")) as source:
                scan.held = pa.ipc.open_file(source).read_all()
        mark_used(cache / f"{key}.npz")  # `distillery cache --prune-older-than` keeps what runs read
        return scan
    except (OSError, ValueError, KeyError, pa.ArrowInvalid):
        return None


def write_scan(cache: Path, key: str, scan: FileScan) -> None:
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
            "digest": [scan.digest.rows, scan.digest.first, scan.digest.second],
            "template": scan.template is not None, "held": scan.held is not None}
    schema = np.frombuffer(scan.schema.serialize().to_pybytes(), np.uint8) if scan.schema is not None else \
        np.zeros(0, np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), counts=scan.counts, keys=scan.keys,
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
