"""The driver's scan of a streamed split, file by file: remembered per file version (a restart
reads only the files that changed), the same result from a pool of processes as from one, and
a file that fails never remembered."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest.file_read as file_read
from ingest.config import DataConfig, SourceConfig
from ingest.file_data import DataError
from ingest.loading import load_dataset

pytestmark = pytest.mark.usefixtures("own_cache")
FEATURES, PARTS, ROWS = 4, 3, 30


def _source(tmp_path, **extra) -> SourceConfig:
    rng = np.random.default_rng(0)
    for part in range(PARTS):
        ids = [f"p{part}-{i}" for i in range(ROWS)]
        pq.write_table(pa.table({"key": ids, "pixels": rng.normal(size=(ROWS, FEATURES)).tolist(),
                                 "digit": (np.arange(ROWS) % 3).tolist()}), tmp_path / f"part-{part}.parquet")
    return SourceConfig(format="parquet", train=str(tmp_path / "part-*.parquet"), test_fraction=0.2, stream=True,
                        columns={"input": "pixels", "label": "digit", "id": "key"}, **extra)


@pytest.fixture
def reads(monkeypatch):
    """The files the scans open, in order."""
    opened = []
    chunks = file_read._chunks
    monkeypatch.setattr(file_read, "_chunks", lambda fs, name, fmt: (opened.append(name), chunks(fs, name, fmt))[1])
    return opened


def _same(a, b) -> None:
    assert a.fingerprint == b.fingerprint and a.streamed.rows == b.streamed.rows
    np.testing.assert_array_equal(a.streamed.class_counts, b.streamed.class_counts)
    assert a.test.ids.tolist() == b.test.ids.tolist() and a.notes == b.notes
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert a.train.x.shape == b.train.x.shape and a.train.x.dtype == b.train.x.dtype


def test_a_second_start_reads_only_the_files_that_changed(tmp_path, reads):
    source = _source(tmp_path)
    first = load_dataset(DataConfig(source=source))
    assert len(reads) == PARTS
    again = load_dataset(DataConfig(source=source))
    assert len(reads) == PARTS  # every file's scan came from the cache
    _same(again, first)

    changed = tmp_path / "part-1.parquet"
    table = pq.read_table(changed)
    pq.write_table(table.slice(0, ROWS - 5), changed)
    os.utime(changed, ns=(1, 1))  # its size and time are the file's version
    shrunk = load_dataset(DataConfig(source=source))
    assert reads[PARTS:] == [str(changed)]
    assert shrunk.fingerprint != first.fingerprint and shrunk.streamed.rows + len(shrunk.test.y) == PARTS * ROWS - 5


def test_a_pool_of_processes_gives_what_one_process_gives(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "pool").mkdir()
    serial = load_dataset(DataConfig(source=_source(tmp_path / "one", scan_workers=1)))
    lines = []
    pooled = load_dataset(DataConfig(source=_source(tmp_path / "pool", scan_workers=2)), progress=lines.append)
    assert "3 to check with 2 processes" in lines[0] and "checked 3 of 3 files" in lines[-1]
    _same(pooled, serial)  # the same rows


def test_a_file_that_fails_is_refused_at_every_start(tmp_path, reads):
    source = _source(tmp_path)
    pq.write_table(pa.table({"key": [f"x{i}" for i in range(10)], "pixels": [[1.0] * FEATURES] * 10,
                             "digit": [-1] * 10}), tmp_path / "part-9.parquet")
    for _ in range(2):
        with pytest.raises(DataError, match="part-9.parquet: label -1"):
            load_dataset(DataConfig(source=source))
    assert reads.count(str(tmp_path / "part-9.parquet")) == 2 and reads.count(str(tmp_path / "part-0.parquet")) == 1


def test_a_language_models_split_is_remembered_too(tmp_path, reads):
    import json
    from pathlib import Path

    tokenizer = str(Path(__file__).resolve().parents[2] / "ingest" / "tokenizers" / "stdlib-bpe-1024")
    for part in range(2):
        with open(tmp_path / f"part-{part}.jsonl", "w") as out:
            for i in range(20):
                out.write(json.dumps({"id": f"{part}-{i}", "prompt": f"def f{i}(x):",
                                      "completion": "Return x. " * (i + 1)}) + "\n")
    cfg = DataConfig(tokenizer=tokenizer, sequence_length=24, source={
        "format": "jsonl", "train": str(tmp_path / "part-*.jsonl"), "test_fraction": 0.2, "stream": True,
        "columns": {"prompt": "prompt", "completion": "completion", "id": "id"}})
    first = load_dataset(cfg)
    again = load_dataset(cfg)
    assert len(reads) == 2 and any("were cut" in note for note in first.notes)
    _same(again, first)
    assert again.streamed.target_tokens == first.streamed.target_tokens
