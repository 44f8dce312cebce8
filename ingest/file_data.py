"""The user's own data as splits: classification rows from Parquet, JSONL or CSV files (local
paths, globs, or any URI pyarrow opens, such as s3://), a Hugging Face dataset saved to disk,
an image folder (`ingest.image_data`) or text lines (read by `ingest.file_read`), with a column
for each role; held-out rows and the rows a stream carries.

Every problem is a `DataError` that names the file, the column and, where it applies, the row,
raised before anything is trained or written. The splits are read into memory.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ingest.config import SourceConfig
from ingest.file_read import SourceRows, image_rows, read_split, split_chunks, stream_block
from ingest.row_hash import held_out_by_id
from ingest.source_paths import DataError
from ingest.splits import Dataset, Split


def _require(rows: SourceRows, names: list[str], role: str) -> None:
    """Every column a role names is in the split's files."""
    missing = [c for c in names if c not in rows.table.column_names]
    if missing:
        raise DataError(f"{rows.files[0]}: no column {missing} (columns.{role}); it has "
                        f"{[c for c in rows.table.column_names if c != '__id']}")


def _vectors(rows: SourceRows, columns: str | list[str], role: str, source: SourceConfig,
             notes: Optional[list[str]]) -> np.ndarray:
    """float32 [N, F] from one list column, several numeric columns, or a column of image
    files' bytes (decoded as `source.image` says); int64 token ids [N, sequence_length] from a
    column of text (tokenized with the run's tokenizer, texts cut counted in `notes`)."""
    names = [columns] if isinstance(columns, str) else list(columns)
    _require(rows, names, role)
    kind = rows.table.schema.field(names[0]).type
    if isinstance(columns, str) and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _text_vectors(rows, columns, role, source, notes)
    image_struct = pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0  # Hugging Face's Image feature
    if isinstance(columns, str) and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or image_struct):
        from ingest.image_data import decode_images

        def where(row: int) -> str:
            one_per_file = len(rows.files) == rows.table.num_rows  # an image folder: the row is the file
            return rows.files[row] if one_per_file else f"{_file_of(rows, row)}: column {columns!r}, row {row}"

        images = rows.table.column(columns).combine_chunks()
        return decode_images(images.field("bytes") if image_struct else images, source.image, where)
    if isinstance(columns, str) and (pa.types.is_list(kind) or pa.types.is_large_list(kind)
                                     or pa.types.is_fixed_size_list(kind)):
        return _list_vectors(rows, columns, role)
    out = []
    for name in names:
        field = rows.table.schema.field(name)
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            raise DataError(f"{rows.files[0]}: column {name!r} (columns.{role}) is {field.type}, not numeric; "
                            f"give a list column or numeric columns")
        column = rows.table.column(name).to_numpy(zero_copy_only=False).astype(np.float32)
        out.append(column)
    return np.stack(out, axis=1)


def _text_vectors(rows: SourceRows, column: str, role: str, source: SourceConfig,
                  notes: Optional[list[str]]) -> np.ndarray:
    from ingest.text_inputs import cached_tokenizer, token_ids

    tokenizer_path, length = source.text_tokenizer
    if tokenizer_path is None:
        raise DataError(f"{rows.files[0]}: column {column!r} (columns.{role}) holds text; give data.tokenizer (and "
                        f"data.sequence_length) to tokenize it")
    values = rows.table.column(column)
    if values.null_count:
        empty = next(i for i, v in enumerate(values.to_pylist()) if v is None)
        raise DataError(f"{_file_of(rows, empty)}: column {column!r} (columns.{role}) is empty at row {empty} (id "
                        f"{_id(rows, empty)}); every row needs a text")
    return token_ids(values.to_pylist(), cached_tokenizer(tokenizer_path), length, f"{rows.files[0]}: column "
                     f"{column!r}", notes)


def _list_vectors(rows: SourceRows, column: str, role: str) -> np.ndarray:
    """float32 [N, F] from a list column, every row holding F numbers (read without Python
    objects: the column's flat values reshaped)."""
    import pyarrow.compute as pc

    values = rows.table.column(column).combine_chunks()
    lengths = pc.list_value_length(values).fill_null(-1).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() < 0 or lengths.min() != lengths.max()):
        row = int(np.flatnonzero((lengths != lengths[0]) | (lengths < 0))[0] if lengths[0] >= 0 else 0)
        shown = lambda n: None if n < 0 else int(n)  # noqa: E731 - an empty row has no length
        raise DataError(f"{_file_of(rows, row)}: column {column!r} (columns.{role}) holds vectors of varying length "
                        f"or none (row {row} of the split, id {_id(rows, row)}: {shown(lengths[row])} values, row 0: "
                        f"{shown(lengths[0])}); every row needs the same number")
    flat = values.flatten()
    if not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)) or flat.null_count:
        raise DataError(f"{rows.files[0]}: column {column!r} (columns.{role}) is not numeric (its values are "
                        f"{flat.type}, {flat.null_count} of them empty)")
    width = int(lengths[0]) if len(lengths) else 0
    return np.array(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(lengths), width)  # writable


def _file_of(rows: SourceRows, row: int) -> str:
    ids = rows.table.column("__id")
    return rows.files[0] if len(rows.files) == 1 else f"{rows.files[0]} .. {rows.files[-1]} (id {ids[row]})"


def _id(rows: SourceRows, row: int) -> str:
    return str(rows.table.column("__id")[row])


def _integers(rows: SourceRows, column: str, role: str) -> np.ndarray:
    _require(rows, [column], role)
    field = rows.table.schema.field(column)
    values = rows.table.column(column)
    if not pa.types.is_integer(field.type) or values.null_count:
        raise DataError(f"{rows.files[0]}: column {column!r} (columns.{role}) must hold integers in every row, "
                        f"it is {field.type} with {values.null_count} empty rows")
    return values.to_numpy().astype(np.int64)


def rows_split(rows: SourceRows, source: SourceConfig, notes: Optional[list[str]] = None) -> Split:
    """A chunk of rows (`SourceRows`) as a split: its column roles read and checked."""
    cols = source.columns
    x = _vectors(rows, cols.input, "input", source, notes)
    y = _integers(rows, cols.label, "label")
    extra = {"task": _integers(rows, cols.task, "task")} if cols.task else {}
    teacher_x = _vectors(rows, cols.teacher_input, "teacher_input", source, notes) if cols.teacher_input else None
    ids = rows.table.column("__id").to_numpy(zero_copy_only=False).astype(str)
    return Split(x, y, extra, teacher_x, ids=ids)


def checked_ids(rows: SourceRows, where: str) -> np.ndarray:
    """The split's row ids, each once."""
    ids = rows.table.column("__id").cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{where}: row ids repeat ({values[counts > 1][:5].tolist()}); each row needs its own "
                        f"id (columns.id)")
    return ids


def check_test_classes(test: Split, train_classes: set[int], where: str) -> None:
    """The test split has no class that no training row has."""
    unseen = sorted(set(test.y.tolist()) - train_classes)
    if unseen:
        raise DataError(f"{where}: the test split has classes {unseen} that no training row has; the teachers "
                        f"could never learn them")


def check_labels(split: Split, num_classes: int, where: str, ids: np.ndarray) -> None:
    bad = np.flatnonzero((split.y < 0) | (split.y >= num_classes))
    if len(bad):
        raise DataError(f"{where}: label {int(split.y[bad[0]])} at row {int(bad[0])} of the split (id {ids[bad[0]]}) "
                        f"is outside the output space 0..{num_classes - 1} (data.source.num_classes)")


def load_source(source: SourceConfig, *, streamed_students: bool = False, test: Optional[Split] = None) -> Dataset:
    """The splits of `source`: train, test (given, or held out of train by id), and the
    students' transfer split when given. `streamed_students`: what a train worker of a streamed
    source holds, the test split only (the students' rows come from the stream): `test` when
    the driver sends the one it read."""
    if streamed_students:
        return _streamed_students(source, test)
    train_rows = read_split(source.train, source)
    test_rows = read_split(source.test, source) if source.test is not None else None
    return rows_dataset(f"source:{source.train}", source, train_rows, test_rows)


def rows_dataset(name: str, source: SourceConfig, train_rows: SourceRows, test_rows: Optional[SourceRows]) -> Dataset:
    """The dataset of rows read for `source`: its column roles turned into splits and checked
    (ids, labels, classes, widths), the transfer split read and the stream scanned where the
    source has them. The bundled sets come here too, as tables (`ingest.bundled`)."""
    ids, notes = checked_ids(train_rows, source.train), []
    if test_rows is not None:
        test, train = rows_split(test_rows, source, notes), rows_split(train_rows, source, notes)
        test_ids, train_ids = checked_ids(test_rows, source.test), ids
    else:
        held = held_out_by_id(ids, source.test_fraction)
        if held.all() or not held.any():
            raise DataError(f"{source.train}: test_fraction {source.test_fraction} of {len(ids)} rows leaves an "
                            f"empty {'train' if held.all() else 'test'} split; give more rows or a test file")
        everything = rows_split(train_rows, source, notes)
        test, train = everything.rows(np.flatnonzero(held)), everything.rows(np.flatnonzero(~held))
        test_ids, train_ids = ids[held], ids[~held]
    class_names = ()
    if source.format == "images":
        from ingest.image_data import image_classes

        class_names = tuple(image_classes(source))
    num_classes = source.num_classes or len(class_names) or int(train.y.max()) + 1
    check_labels(train, num_classes, source.train, train_ids)
    check_labels(test, num_classes, source.test or source.train, test_ids)
    check_test_classes(test, set(train.y.tolist()), source.test or source.train)
    same_width(source.test, test, train)
    transfer = None
    if source.transfer is not None:
        transfer_rows = read_split(source.transfer, source)
        transfer = rows_split(transfer_rows, source, notes)
        check_labels(transfer, num_classes, source.transfer, checked_ids(transfer_rows, source.transfer))
        same_width(source.transfer, transfer, train)
    return Dataset(name, transfer or train, test, num_classes=num_classes,
                   teacher_train=train if transfer is not None else None, class_names=class_names, notes=tuple(notes))


def same_width(where: Optional[str], split: Split, train: Split) -> None:
    if split.x.shape[1] != train.x.shape[1]:
        raise DataError(f"{where}: {split.x.shape[1]} input features, the train split has {train.x.shape[1]}")


def check_unique_keys(keys: list[np.ndarray], path: str) -> None:
    """A split scanned in chunks holds each row id once (`keys`: the chunks' `row_keys`)."""
    _, seen = np.unique(np.concatenate(keys), return_counts=True)
    refuse_repeated_ids(path, int((seen > 1).sum()))


def refuse_repeated_ids(path: str, repeated: int) -> None:
    """A `DataError` when `repeated` ids of the split at `path` occur more than once."""
    if repeated:
        raise DataError(f"{path}: row ids repeat ({repeated} ids more than once); each row needs its own id "
                        f"(columns.id)")


def held_out_rows(table: pa.Table, source: SourceConfig) -> np.ndarray:
    """Whether each row of a table with an `__id` column belongs to the test split held out of
    train (all False when the test split has files of its own)."""
    if source.test is not None:
        return np.zeros(table.num_rows, bool)
    return held_out_by_id(table.column("__id").cast(pa.string()).to_numpy(zero_copy_only=False), source.test_fraction)


class HeldOut:
    """The test rows held out of a streamed source's train split by id, collected a chunk at a
    time while the split is scanned for its other rows (one pass over the files); `keep=False`
    only drops them (an image folder reads its held-out images itself)."""

    def __init__(self, keep: bool = True):
        self.keep = keep
        self.tables: list[pa.Table] = []
        self.files: list[str] = []

    def split_off(self, rows: SourceRows, source: SourceConfig) -> SourceRows:
        """`rows` less its held-out rows, which are kept."""
        held = held_out_rows(rows.table, source)
        if self.keep:
            self.tables.append(rows.table.filter(pa.array(held)))
            self.files += [name for name in rows.files if name not in self.files[-1:]]
        return SourceRows(rows.table.filter(pa.array(~held)), rows.files)

    def add(self, table: Optional[pa.Table], name: str) -> None:
        """The held-out rows `table` of file `name` (None: it has none)."""
        if table is not None:
            self.tables.append(table)
        self.files += [name] if name not in self.files[-1:] else []

    def rows(self, source: SourceConfig) -> SourceRows:
        rows = SourceRows(pa.concat_tables(self.tables), self.files) if self.tables else None
        if rows is None or rows.table.num_rows == 0:
            raise DataError(f"{source.train}: test_fraction {source.test_fraction} holds out no row")
        return rows


def held_out_train_rows(source: SourceConfig) -> SourceRows:
    """The test rows held out of a streamed source's train files by id, read a chunk at a time
    (a worker never holds the whole train split)."""
    held = HeldOut()
    for chunk in split_chunks(source.train, source):
        held.split_off(chunk, source)
    return held.rows(source)


def _streamed_students(source: SourceConfig, test: Optional[Split]) -> Dataset:
    """The test split (`test`, else read) and an empty training split of the input's width."""
    if source.num_classes is None:
        raise DataError("data.source.num_classes: a streamed source's train workers need the output space; the "
                        "driver sets it from the data before training, or give it in the config")
    test = test if test is not None else streamed_test_split(source)
    return Dataset(f"source:{source.train}", test.rows(slice(0, 0)), test, num_classes=source.num_classes)


def streamed_test_split(source: SourceConfig, notes: Optional[list[str]] = None,
                        held: Optional[HeldOut] = None) -> Split:
    """A streamed source's test split: its files, or the rows held out of train (`held`, as a
    scan of train collected them, else read a chunk at a time; only the held-out images of an
    image folder are read)."""
    if source.test is not None:
        return rows_split(read_split(source.test, source), source, notes)
    if held is not None:
        return rows_split(held.rows(source), source, notes)
    if source.format == "images":
        from ingest.image_data import read_image_folder

        held = lambda ids: held_out_by_id(np.array(ids), source.test_fraction)  # noqa: E731
        return rows_split(image_rows(*read_image_folder(source.train, source, keep=held)), source, notes)
    return rows_split(held_out_train_rows(source), source, notes)


def to_stream_rows(table: pa.Table, source: SourceConfig, file: str) -> dict[str, np.ndarray]:
    """One block of the students' stream as the train workers read it: `id`, `x`, `y`, and
    `teacher_x` and `task` where the source has them; rows held out for the test split are
    dropped (the stream of `train` when there is no transfer split)."""
    rows = stream_block(table, source, file)
    table = rows.table
    keep = np.ones(table.num_rows, bool) if source.transfer is not None else ~held_out_rows(table, source)
    split = rows_split(rows, source)
    if not keep.all():
        split = split.rows(np.flatnonzero(keep))
    out = {"id": table.column("__id").to_numpy(zero_copy_only=False)[keep], "x": split.x, "y": split.y}
    if split.teacher_x is not None:
        out["teacher_x"] = split.teacher_x
    if "task" in split.columns:
        out["task"] = split.columns["task"]
    return out
