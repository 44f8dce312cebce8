"""Reading a user's files (Parquet, JSONL, CSV, text lines; images and saved Hugging Face
datasets through their own modules) into tables with a row id each, whole or a chunk at a
time, checked for one schema across the files of a split. Every problem is a `DataError`
that names the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyarrow as pa

from ingest.config import SourceConfig
from ingest.source_paths import DataError, source_files


@dataclass
class SourceRows:
    """One split as read: its table (with an `__id` column) and the files it came from."""

    table: pa.Table
    files: list[str]


def _read_file(filesystem, path: str, fmt: str) -> pa.Table:
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, filesystem=filesystem)
        with filesystem.open_input_stream(path) as stream:
            if fmt == "csv":
                import pyarrow.csv as pcsv

                return pcsv.read_csv(stream)
            import pyarrow.json as pjson

            return pjson.read_json(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not readable as {fmt}: {exc}") from None


def _same_schema(table: pa.Table, first: Optional[pa.Schema], name: str, files: list[str]) -> pa.Schema:
    """The schema every file of a split must have: the first file's (returned)."""
    schema = table.schema.remove_metadata()
    if first is not None and schema != first:
        raise DataError(f"{name}: its columns {schema.names} ({schema.types}) differ from {files[0]}'s "
                        f"{first.names} ({first.types}); every file of a split needs one schema")
    return first or schema


def _with_ids(table: pa.Table, name: str, id_column: Optional[str]) -> pa.Table:
    """The table of file `name` with its row ids as `__id`: the id column's values, or the
    file's name and the row's number."""
    if id_column is None:
        ids = pa.array([f"{Path(name).name}:{row}" for row in range(table.num_rows)])
    else:
        if id_column not in table.column_names:
            raise DataError(f"{name}: no column {id_column!r} (columns.id); it has {table.column_names}")
        ids = table.column(id_column).cast(pa.string())
    return table.append_column("__id", ids)


def read_split(path: str, source: SourceConfig) -> SourceRows:
    """Every file of a split, one table; files of one split must share a schema. An image
    source's split is its folder's images (`ingest.image_data`)."""
    if source.format == "images":
        from ingest.image_data import read_image_folder

        return image_rows(*read_image_folder(path, source))
    if source.format == "hf_dataset":
        from ingest.hf_data import hf_chunks

        tables = [table for table, _ in hf_chunks(path, source.columns.id)]
        if sum(t.num_rows for t in tables) == 0:
            raise DataError(f"{path}: the split has no rows")
        return SourceRows(pa.concat_tables(tables), [path])
    filesystem, files = source_files(path)
    if source.format == "text":
        return _text_lines(filesystem, files, path)
    tables, first = [], None
    for name in files:
        table = _read_file(filesystem, name, source.format)
        first = _same_schema(table, first, name, files)
        tables.append(_with_ids(table, name, source.columns.id))
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise DataError(f"{path}: the split has no rows ({len(files)} files)")
    return SourceRows(table, files)


def image_rows(table: pa.Table, files: list[str]) -> SourceRows:
    """An image folder's rows (`ingest.image_data`), their ids the images' paths."""
    return SourceRows(table.append_column("__id", table.column("id")), files)


def _text_lines(filesystem, files: list[str], path: str, *, whole: bool = True) -> SourceRows:
    """Plain text files: one row per non-empty line, id `file:line` (the line's number from 1);
    `whole`: the files are the whole split, which must have a line."""

    def contents():
        for name in files:
            try:
                with filesystem.open_input_stream(name) as stream:
                    yield name, stream.read()
            except OSError as exc:
                raise DataError(f"{name}: cannot read it ({exc})") from None

    table = _lines_table(contents())
    if whole and table.num_rows == 0:
        raise DataError(f"{path}: the split has no text lines ({len(files)} files)")
    return SourceRows(table, files)


def _lines_table(contents) -> pa.Table:
    """The non-empty lines (`text`) and their ids (`__id`) of text files given as (name, bytes)."""
    texts, ids = [], []
    for name, data in contents:
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: not UTF-8 text ({exc}); a text source reads UTF-8 files") from None
        kept = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
        texts += [line for _, line in kept]
        ids += [f"{Path(name).name}:{number}" for number, _ in kept]
    return pa.table({"text": pa.array(texts, pa.string()), "__id": pa.array(ids, pa.string())})


def stream_block(table: pa.Table, source: SourceConfig, file: str) -> SourceRows:
    """One block of the students' Ray Data stream as rows with their ids (`__id`): an image
    folder's and a text source's blocks are `read_binary_files`' paths and bytes (decoded, or
    cut into lines, as in memory); a saved dataset's read tasks add the ids themselves."""
    if source.format == "images":
        from ingest.image_data import stream_table

        return image_rows(stream_table(table, source, file), [file])
    if source.format == "text":
        return SourceRows(_lines_table(zip(table.column("path").to_pylist(), table.column("bytes").to_pylist())),
                          [file])
    if source.format == "hf_dataset":
        return SourceRows(table, [file])
    return SourceRows(table.append_column("__id", table.column(source.columns.id).cast(pa.string())), [file])


def _chunks(filesystem, path: str, fmt: str, rows: int = 65_536):
    """A file's rows as tables of at most about `rows` rows (Parquet, CSV) or of pyarrow's
    block size (JSONL), so that one file never has to fit in memory."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path, filesystem=filesystem).iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch])
            return
        with filesystem.open_input_stream(path) as stream:
            if fmt == "csv":
                import pyarrow.csv as pcsv

                reader = pcsv.open_csv(stream)
            else:
                import pyarrow.json as pjson

                reader = pjson.open_json(stream)
            for batch in reader:
                yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not readable as {fmt}: {exc}") from None


def split_chunks(path: str, source: SourceConfig):
    """A split's rows a chunk at a time (`SourceRows`), checked for one schema across files: a
    record batch of a file, an image folder's chunk, or a text file's lines."""
    if source.format == "images":
        from ingest.image_data import image_chunks

        for table, files in image_chunks(path, source):
            yield image_rows(table, files)
        return
    if source.format == "hf_dataset":
        from ingest.hf_data import hf_chunks

        for table, name in hf_chunks(path, source.columns.id):
            yield SourceRows(table, [name])
        return
    filesystem, files = source_files(path)
    first = None
    for name in files:
        for rows in file_chunks(filesystem, name, source):
            if source.format != "text":
                first = _same_schema(rows.table.drop_columns(["__id"]), first, name, files)
            yield rows


def file_chunks(filesystem, name: str, source: SourceConfig):
    """One file of a Parquet, JSONL, CSV or text split a chunk at a time (`SourceRows`, with
    the rows' ids): record batches of a file, or a text file's lines."""
    if source.format == "text":
        yield _text_lines(filesystem, [name], name, whole=False)
        return
    for table in _chunks(filesystem, name, source.format):
        yield SourceRows(_with_ids(table, name, source.columns.id), [name])


def same_schema(schema: pa.Schema, first: Optional[pa.Schema], name: str, files: list[str]) -> pa.Schema:
    """`_same_schema` of a file's columns as a schema."""
    return _same_schema(schema.empty_table(), first, name, files)
