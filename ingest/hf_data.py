"""A Hugging Face dataset saved with `save_to_disk`, read with pyarrow alone: the split's folder
holds `state.json`, which lists its Arrow stream files in order, and the rows are those files'
record batches (`save_to_disk` writes the rows a dataset's indices select, in their order).

The same reader serves the in-memory path, the driver's chunked scan and the students' Ray
Data stream (`HFDatasetSource`, one read task per file), so a row has one id everywhere: the
folder's name and the row's number in the split, unless the config names an id column.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Iterator, Optional

import pyarrow as pa

from ingest.source_paths import DataError, filesystem_of

DATASET_STATE = "state.json"
DATASET_DICT = "dataset_dict.json"


def hf_files(path: str) -> tuple[pa.fs.FileSystem, list[str]]:
    """The filesystem and the Arrow files of the split saved at `path`, in the split's order."""
    filesystem, root = filesystem_of(path)
    root = root.rstrip("/")
    state = _read_json(filesystem, f"{root}/{DATASET_STATE}")
    if state is None:
        splits = _read_json(filesystem, f"{root}/{DATASET_DICT}")
        if splits is not None:
            names = sorted(splits.get("splits", []))
            raise DataError(f"{path}: a DatasetDict of splits {names}; give one split's folder, e.g. "
                            f"{path.rstrip('/')}/{names[0] if names else 'train'}")
        raise DataError(f"{path}: not a dataset saved with save_to_disk (no {DATASET_STATE} there)")
    files = [f"{root}/{entry['filename']}" for entry in state.get("_data_files", [])]
    if not files:
        raise DataError(f"{path}: {DATASET_STATE} lists no data files")
    return filesystem, files


def _read_json(filesystem: pa.fs.FileSystem, name: str) -> Optional[dict]:
    try:
        with filesystem.open_input_stream(name) as stream:
            return json.loads(stream.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{name}: cannot read it ({exc})") from None


def file_batches(filesystem: pa.fs.FileSystem, name: str) -> Iterator[pa.Table]:
    """One Arrow stream file's record batches, one table each."""
    try:
        with filesystem.open_input_file(name) as handle:
            for batch in pa.ipc.open_stream(handle):
                yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{name}: not readable as an Arrow stream file of a saved dataset: {exc}") from None


def with_row_ids(table: pa.Table, folder: str, first_row: int, id_column: Optional[str], where: str) -> pa.Table:
    """The table with its row ids as `__id`: the id column's values, or the split folder's name
    and the row's number in the split (`first_row`: the number of the table's first row)."""
    if id_column is None:
        name = PurePosixPath(folder.rstrip("/")).name
        ids = pa.array([f"{name}:{row}" for row in range(first_row, first_row + table.num_rows)])
    elif id_column not in table.column_names:
        raise DataError(f"{where}: no column {id_column!r} (columns.id); it has {table.column_names}")
    else:
        ids = table.column(id_column).cast(pa.string())
    return table.append_column("__id", ids)


def hf_chunks(path: str, id_column: Optional[str]) -> Iterator[tuple[pa.Table, str]]:
    """The split's rows a record batch at a time, with `__id`, and the file each came from."""
    filesystem, files = hf_files(path)
    first_row = 0
    for name in files:
        for table in _keyed_batches(filesystem, name, path, first_row, id_column):
            yield table, name
            first_row += table.num_rows


def _keyed_batches(filesystem: pa.fs.FileSystem, name: str, path: str, first_row: int,
                   id_column: Optional[str]) -> Iterator[pa.Table]:
    """One Arrow file's record batches with their row ids (`first_row`: the file's first row's
    number in the split)."""
    for table in file_batches(filesystem, name):
        yield with_row_ids(table, path, first_row, id_column, name)
        first_row += table.num_rows


def _file_rows(filesystem: pa.fs.FileSystem, files: list[str]) -> list[int]:
    """The rows in each Arrow file (the record batches are read for their lengths only)."""
    return [sum(table.num_rows for table in file_batches(filesystem, name)) for name in files]


def hf_datasource(path: str, id_column: Optional[str]):
    """A Ray Data datasource of the split saved at `path`: one read task per Arrow file, which
    yields its record batches as blocks with the rows' ids (column `__id`)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    filesystem, files = hf_files(path)
    counts = _file_rows(filesystem, files)
    starts = [sum(counts[:i]) for i in range(len(counts))]

    class HFDatasetSource(Datasource):
        def estimate_inmemory_data_size(self) -> Optional[int]:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                           data_context=None) -> list[ReadTask]:
            return [ReadTask(lambda name=name, start=start: _keyed_batches(filesystem, name, path, start, id_column),
                             BlockMetadata(num_rows=rows, size_bytes=None, input_files=[name], exec_stats=None))
                    for name, start, rows in zip(files, starts, counts)]

    return HFDatasetSource()
