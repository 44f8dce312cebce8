"""The user's own language-model data: rows of `prompt` and `completion` text, of chat
`messages`, or of plain `text` (the lines of text files, or a column), from JSONL, Parquet,
CSV or text files, tokenized with the run's tokenizer into sequences in the model's own format
(`ingest.lm_sequences`: its bos/eos conventions or its chat template, every assistant turn
taught; cut to `data.sequence_length`, right-padded; `ingest.token_layout`). The bundled
`stdlib_functions` comes here too. Every problem is a `DataError` naming the file, the column
and the row.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ingest.config import DataConfig, SourceConfig
from ingest.file_data import DataError, HeldOut, checked_ids, held_out_by_id, held_out_rows, held_out_train_rows
from ingest.file_read import SourceRows, read_split, stream_block
from ingest.file_scan import FileScan, Progress, ScanSpec
from ingest.lm_data import generated_sequences
from ingest.lm_sequences import chat_rows, learnable, prompt_completion_rows, sequences, text_rows
from ingest.row_hash import row_hashes
from ingest.split_scan import fingerprint, merged, scan_split_files
from ingest.splits import Dataset, Split, StreamedSplit


def _texts(rows: SourceRows, column: str, role: str) -> list[str]:
    if column not in rows.table.column_names:
        raise DataError(f"{rows.files[0]}: no column {column!r} (columns.{role}); it has "
                        f"{[c for c in rows.table.column_names if c != '__id']}")
    values = rows.table.column(column)
    kind = values.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)) or values.null_count:
        empty = next((i for i, v in enumerate(values.to_pylist()) if v is None), None)
        raise DataError(f"{rows.files[0]}: column {column!r} (columns.{role}) must hold text in every row; it is "
                        f"{kind}" + (f", empty at row {empty} (id {rows.table.column('__id')[empty]})"
                                     if empty is not None else ""))
    return values.to_pylist()


def _packed_rows(rows: SourceRows, source: SourceConfig, tokenizer, where: str, ids: np.ndarray) -> list[np.ndarray]:
    """Each row (with its id, for errors) as its packed token sequence, uncut (`ingest.lm_sequences`)."""
    cols = source.columns
    if cols.messages:
        if cols.messages not in rows.table.column_names:
            raise DataError(f"{rows.files[0]}: no column {cols.messages!r} (columns.messages); it has "
                            f"{[c for c in rows.table.column_names if c != '__id']}")
        return chat_rows(tokenizer, rows.table.column(cols.messages).to_pylist(), where, ids, cols.messages)
    if cols.text:
        return text_rows(tokenizer, _texts(rows, cols.text, "text"))
    return prompt_completion_rows(tokenizer, _texts(rows, cols.prompt, "prompt"),
                                  _texts(rows, cols.completion, "completion"))


def _sequences(rows: SourceRows, source: SourceConfig, tokenizer, length: int, where: str,
               notes: Optional[list[str]]) -> np.ndarray:
    """int64 [N, length]: the rows' token sequences; rows longer than `length` are cut and
    counted in `notes`, a row with nothing to learn within it refused."""
    ids = rows.table.column("__id").cast(pa.string()).to_numpy(zero_copy_only=False)
    return sequences(_packed_rows(rows, source, tokenizer, where, ids), length, where, ids, notes)


def load_lm_source(cfg: DataConfig, *, streamed_students: bool = False, test: Optional[Split] = None) -> Dataset:
    """The token sequences of a prompt/completion, chat or text source: train (the teachers'),
    test (given, or held out of train by id), and the students' transfer split when given.
    `streamed_students`: what a train worker of a streamed source holds, the test split only
    (`test` when the driver sends the one it read)."""
    source = cfg.source
    if streamed_students:
        return lm_test_view(cfg, test=test)
    train_rows = read_split(source.train, source)
    test_rows = read_split(source.test, source) if source.test is not None else None
    return lm_rows_dataset(f"source:{source.train}", cfg, source, train_rows, test_rows)


def _tokenizer(cfg: DataConfig):
    from ingest.text_inputs import cached_tokenizer

    return cached_tokenizer(cfg.tokenizer)  # one per process: a Ray Data task tokenizes many blocks


def lm_test_view(cfg: DataConfig, notes: Optional[list[str]] = None, test: Optional[Split] = None,
                 held: Optional[HeldOut] = None) -> Dataset:
    """The test split (`test`, else read: its file, or the rows held out of train, as a scan of
    train collected them in `held` or read a chunk at a time) and an empty training split of
    the sequences' width (texts cut counted in `notes`)."""
    from ingest.tokenizer import tokenizer_hash

    source, tokenizer = cfg.source, _tokenizer(cfg)
    if test is None:
        if source.test is not None:
            rows = read_split(source.test, source)
        else:
            rows = held.rows(source) if held is not None else held_out_train_rows(source)
        where = source.test or source.train
        x = _sequences(rows, source, tokenizer, cfg.sequence_length, where, [] if notes is None else notes)
        test = Split(x, np.zeros(len(x), np.int64), token_sequences=True,
                     ids=checked_ids(rows, source.test or source.train))
    return Dataset(f"source:{source.train}", test.rows(slice(0, 0)), test, num_classes=len(tokenizer), kind="lm",
                   tokenizer_hash=tokenizer_hash(tokenizer))


def to_lm_stream_rows(table: pa.Table, cfg: DataConfig, file: str) -> dict[str, np.ndarray]:
    """One block of a language-model source's students' stream: `id` and `x`, the token
    sequences (`y` zeros: a worker labels the next tokens); rows held out for the test split
    are dropped (the stream of `train` when there is no transfer split)."""
    source, tokenizer = cfg.source, _tokenizer(cfg)
    rows = stream_block(table, source, file)
    if source.transfer is None:
        rows = SourceRows(rows.table.filter(pa.array(~held_out_rows(rows.table, source))), [file])
    x = _sequences(rows, source, tokenizer, cfg.sequence_length, file, None)
    return {"id": rows.table.column("__id").to_numpy(zero_copy_only=False), "x": x, "y": np.zeros(len(x), np.int64)}


def scan_lm_split(path: str, cfg: DataConfig, notes: list[str], *, held_out: Optional[HeldOut] = None,
                  progress: Progress = None, on_cluster: bool = False) -> StreamedSplit:
    """Tokenize and check every row of a streamed split without keeping it (file by file:
    `ingest.split_scan`): texts, unique ids, cut rows (in `notes`), target tokens and the
    rows' fingerprint. `held_out`: the split is `train` less the test rows `test_fraction`
    holds out, which it collects (the same pass)."""
    from ingest.tokenizer import tokenizer_hash

    tokenizer = _tokenizer(cfg)
    spec = ScanSpec(cfg.source, hold_out=held_out is not None, keep_held=held_out is not None and held_out.keep,
                    data=cfg, chunk=scan_chunk)
    scans = merged(scan_split_files(path, spec, progress, on_cluster), held_out, notes)
    space = f"tokens:{len(tokenizer)}:{tokenizer_hash(tokenizer)}"  # the dataset's output space
    template = Split(np.zeros((0, cfg.sequence_length), np.int64), np.zeros(0, np.int64),
                     token_sequences=True)
    return StreamedSplit(sum(scan.rows for _, scan in scans), np.array([], np.int64), fingerprint(path, space, scans),
                         target_tokens=sum(scan.target_tokens for _, scan in scans), template=template)


def scan_chunk(rows: SourceRows, spec: ScanSpec, out: FileScan, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A language model's chunk (`ScanSpec.chunk`): its texts tokenized, ids checked, rows cut
    counted in the scan's notes, target tokens counted; its rows' keys and hashes."""
    from ingest.row_hash import row_keys
    tokenizer = _tokenizer(spec.data)
    ids = checked_ids(rows, where)
    x = _sequences(rows, spec.source, tokenizer, spec.data.sequence_length, rows.files[0], out.notes)
    split = Split(x, np.zeros(len(x), np.int64), token_sequences=True, ids=ids)
    out.rows += len(x)
    out.target_tokens += len(split.labels(slice(None)))
    keys = row_keys(ids)
    return keys, row_hashes(ids, x, split.y, keys)


def lm_rows_dataset(name: str, cfg: DataConfig, source: SourceConfig, train_rows: SourceRows,
                    test_rows: Optional[SourceRows], *, bundled: bool = False) -> Dataset:
    """The language-model dataset of rows read for `source` (the bundled `stdlib_functions`
    comes here too, as tables: `ingest.bundled`; `bundled`: rows whose prompt fills the window
    are left out, with a note, where a user's are refused)."""
    from ingest.tokenizer import load_tokenizer, tokenizer_hash

    length, notes = cfg.sequence_length, []
    tokenizer = load_tokenizer(cfg.tokenizer)

    def split_of(path: str, packed: list[np.ndarray], ids: np.ndarray) -> Split:
        if bundled:
            keep = learnable(packed, length)
            if not keep.all():
                notes.append(f"{path}: {int((~keep).sum())} of {len(keep)} rows left out: their prompt fills "
                             f"data.sequence_length {length}")
            packed, ids = [row for row, kept in zip(packed, keep) if kept], ids[keep]
        x = sequences(packed, length, path, ids, notes)
        return Split(x, np.zeros(len(x), np.int64), token_sequences=True, ids=ids)

    def split_of_rows(path: str, rows: SourceRows) -> Split:
        ids = checked_ids(rows, path)
        return split_of(path, _packed_rows(rows, source, tokenizer, path, ids), ids)

    if test_rows is not None:
        train, test = split_of_rows(source.train, train_rows), split_of_rows(source.test, test_rows)
    else:
        ids = checked_ids(train_rows, source.train)
        held = held_out_by_id(ids, source.test_fraction)
        if held.all() or not held.any():
            raise DataError(f"{source.train}: test_fraction {source.test_fraction} of {len(held)} rows leaves an "
                            f"empty {'train' if held.all() else 'test'} split; give more rows or a test file")
        packed = _packed_rows(train_rows, source, tokenizer, source.train, ids)
        train = split_of(source.train, [packed[i] for i in np.flatnonzero(~held)], ids[~held])
        test = split_of(source.train, [packed[i] for i in np.flatnonzero(held)], ids[held])
    students = train
    if source.transfer is not None:
        students = split_of_rows(source.transfer, read_split(source.transfer, source))
    if cfg.generated:  # sequence-level KD: the teachers' completions of the prompts replace the students' split
        generated = generated_sequences(cfg.generated, length)
        students = Split(generated, np.zeros(len(generated), np.int64), token_sequences=True)
    return Dataset(name, students, test, num_classes=len(tokenizer), kind="lm", tokenizer_hash=tokenizer_hash(tokenizer),
                   teacher_train=train if students is not train else None, notes=tuple(notes))
