"""The user's own language-model data: rows of `prompt` and `completion` text, of chat
`messages`, or of plain `text` (the lines of text files, or a column), from JSONL, Parquet,
CSV or text files, tokenized with the run's tokenizer into the
sequences the bundled `stdlib_functions` uses (`<bos> prompt <sep> completion <eos>`, cut to
`data.sequence_length`, right-padded; the loss covers the completion, `ingest.lm_data`).

Chat rows are rendered with the tokenizer's chat template: every turn but the last is the
prompt (with the template's generation prompt), the last turn, the assistant's, the
completion. Every problem is a `DataError` naming the file, the column and the row.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ingest.config import DataConfig, SourceConfig
from ingest.file_data import DataError, HeldOut, checked_ids, held_out_by_id, held_out_rows, held_out_train_rows
from ingest.file_read import SourceRows, read_split, stream_block
from ingest.file_scan import FileScan, Progress, ScanSpec
from ingest.lm_data import encode_with_lengths, generated_sequences
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


def _chat_pairs(rows: SourceRows, column: str, tokenizer) -> list[tuple[str, str]]:
    if column not in rows.table.column_names:
        raise DataError(f"{rows.files[0]}: no column {column!r} (columns.messages); it has "
                        f"{[c for c in rows.table.column_names if c != '__id']}")
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{rows.files[0]}: column {column!r} holds chat messages, but the tokenizer has no chat "
                        f"template; give one in its tokenizer_config.json, or use prompt and completion columns")
    pairs = []
    for row, turns in enumerate(rows.table.column(column).to_pylist()):
        ok = (isinstance(turns, list) and len(turns) >= 2 and all(isinstance(t, dict) and isinstance(
            t.get("content"), str) and isinstance(t.get("role"), str) for t in turns))
        if not ok or turns[-1]["role"] != "assistant":
            raise DataError(f"{rows.files[0]}: row {row} (id {rows.table.column('__id')[row]}) of column {column!r} "
                            f"(columns.messages) is not a list of at least two {{role, content}} turns ending with "
                            f"the assistant's")
        prompt = tokenizer.apply_chat_template([{"role": t["role"], "content": t["content"]} for t in turns[:-1]],
                                               tokenize=False, add_generation_prompt=True)
        pairs.append((prompt, turns[-1]["content"]))
    return pairs


def _pairs(rows: SourceRows, source: SourceConfig, tokenizer) -> list[tuple[str, str]]:
    cols = source.columns
    if cols.messages:
        return _chat_pairs(rows, cols.messages, tokenizer)
    if cols.text:
        return [("", text) for text in _texts(rows, cols.text, "text")]
    return list(zip(_texts(rows, cols.prompt, "prompt"), _texts(rows, cols.completion, "completion")))


def _sequences(pairs: list[tuple[str, str]], tokenizer, length: int, where: str, notes: list[str]) -> np.ndarray:
    """The token sequences of `pairs`; rows longer than `length` are cut and counted in `notes`."""
    x, lengths = encode_with_lengths(tokenizer, pairs, length)
    cut = int((lengths > length).sum())
    if cut:
        notes.append(f"{where}: {cut} of {len(pairs)} rows are longer than data.sequence_length {length} tokens "
                     f"(longest {int(lengths.max())}) and were cut")
    return x


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
    from ingest.token_targets import specials_of
    from ingest.tokenizer import tokenizer_hash

    source, tokenizer = cfg.source, _tokenizer(cfg)
    if test is None:
        if source.test is not None:
            rows = read_split(source.test, source)
        else:
            rows = held.rows(source) if held is not None else held_out_train_rows(source)
        x = _sequences(_pairs(rows, source, tokenizer), tokenizer, cfg.sequence_length, source.test or source.train,
                       [] if notes is None else notes)
        test = Split(x, np.zeros(len(x), np.int64), token_specials=specials_of(tokenizer),
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
    x = _sequences(_pairs(rows, source, tokenizer), tokenizer, cfg.sequence_length, file, [])
    return {"id": rows.table.column("__id").to_numpy(zero_copy_only=False), "x": x, "y": np.zeros(len(x), np.int64)}


def scan_lm_split(path: str, cfg: DataConfig, notes: list[str], *, held_out: Optional[HeldOut] = None,
                  progress: Progress = None, on_cluster: bool = False) -> StreamedSplit:
    """Tokenize and check every row of a streamed split without keeping it (file by file:
    `ingest.split_scan`): texts, unique ids, cut rows (in `notes`), target tokens and the
    rows' fingerprint. `held_out`: the split is `train` less the test rows `test_fraction`
    holds out, which it collects (the same pass)."""
    from ingest.token_targets import specials_of
    from ingest.tokenizer import tokenizer_hash

    tokenizer = _tokenizer(cfg)
    spec = ScanSpec(cfg.source, hold_out=held_out is not None, keep_held=held_out is not None and held_out.keep,
                    data=cfg, chunk=scan_chunk)
    scans = merged(scan_split_files(path, spec, progress, on_cluster), held_out, notes)
    space = f"tokens:{len(tokenizer)}:{tokenizer_hash(tokenizer)}"  # the dataset's output space
    template = Split(np.zeros((0, cfg.sequence_length), np.int64), np.zeros(0, np.int64),
                     token_specials=specials_of(tokenizer))
    return StreamedSplit(sum(scan.rows for _, scan in scans), np.array([], np.int64), fingerprint(path, space, scans),
                         target_tokens=sum(scan.target_tokens for _, scan in scans), template=template)


def scan_chunk(rows: SourceRows, spec: ScanSpec, out: FileScan, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A language model's chunk (`ScanSpec.chunk`): its texts tokenized, ids checked, rows cut
    counted in the scan's notes, target tokens counted; its rows' keys and hashes."""
    from ingest.row_hash import row_keys
    from ingest.token_targets import specials_of

    tokenizer = _tokenizer(spec.data)
    ids = checked_ids(rows, where)
    x = _sequences(_pairs(rows, spec.source, tokenizer), tokenizer, spec.data.sequence_length, rows.files[0],
                   out.notes)
    split = Split(x, np.zeros(len(x), np.int64), token_specials=specials_of(tokenizer), ids=ids)
    out.rows += len(x)
    out.target_tokens += len(split.labels(slice(None)))
    keys = row_keys(ids)
    return keys, row_hashes(ids, x, split.y, keys)


def lm_rows_dataset(name: str, cfg: DataConfig, source: SourceConfig, train_rows: SourceRows,
                    test_rows: Optional[SourceRows]) -> Dataset:
    """The language-model dataset of rows read for `source` (the bundled `stdlib_functions`
    comes here too, as tables: `ingest.bundled`)."""
    from ingest.token_targets import specials_of
    from ingest.tokenizer import load_tokenizer, tokenizer_hash

    length, notes = cfg.sequence_length, []
    tokenizer = load_tokenizer(cfg.tokenizer)
    specials = specials_of(tokenizer)

    def split_of(path: str, pairs: list[tuple[str, str]], ids: np.ndarray) -> Split:
        x = _sequences(pairs, tokenizer, length, path, notes)
        return Split(x, np.zeros(len(x), np.int64), token_specials=specials, ids=ids)

    def split_of_rows(path: str, rows: SourceRows) -> Split:
        return split_of(path, _pairs(rows, source, tokenizer), checked_ids(rows, path))

    if test_rows is not None:
        train, test = split_of_rows(source.train, train_rows), split_of_rows(source.test, test_rows)
    else:
        ids = checked_ids(train_rows, source.train)
        held = held_out_by_id(ids, source.test_fraction)
        if held.all() or not held.any():
            raise DataError(f"{source.train}: test_fraction {source.test_fraction} of {len(held)} rows leaves an "
                            f"empty {'train' if held.all() else 'test'} split; give more rows or a test file")
        pairs = _pairs(train_rows, source, tokenizer)
        train = split_of(source.train, [pairs[i] for i in np.flatnonzero(~held)], ids[~held])
        test = split_of(source.train, [pairs[i] for i in np.flatnonzero(held)], ids[held])
    students = train
    if source.transfer is not None:
        students = split_of_rows(source.transfer, read_split(source.transfer, source))
    if cfg.generated:  # sequence-level KD: the teachers' completions of the prompts replace the students' split
        generated = generated_sequences(cfg.generated, length, specials.pad, int(tokenizer.eos_token_id))
        students = Split(generated, np.zeros(len(generated), np.int64), token_specials=specials)
    return Dataset(name, students, test, num_classes=len(tokenizer), kind="lm", tokenizer_hash=tokenizer_hash(tokenizer),
                   teacher_train=train if students is not train else None, notes=tuple(notes))
