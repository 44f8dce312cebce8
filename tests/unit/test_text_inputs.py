"""Text as a classifier's input: a column of strings tokenized with the run's tokenizer into
token ids of `data.sequence_length` (cut and counted, padded), learnable by the zoo's
`text_classifier`; a text column without a tokenizer is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ingest import load_tokenizer
from ingest.config import DataConfig
from ingest.file_data import DataError
from ingest.loading import load_dataset
from models.zoo import text_classifier

pytestmark = pytest.mark.usefixtures("own_cache")  # the driver's scans are cached there

TOKENIZER = str(Path(__file__).resolve().parents[2] / "ingest" / "tokenizers" / "stdlib-bpe-1024")
TOPICS = ["open the file and read its lines", "sort the list of numbers in place", "send the request to the server"]


def _reviews(path: Path, n: int, long_rows: int = 0) -> str:
    rows = [{"id": f"r{i}", "text": f"please {TOPICS[i % 3]} now" + (" again" * 40 if i < long_rows else ""),
             "topic": i % 3} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _config(tmp_path: Path, **data) -> DataConfig:
    return DataConfig(source={"format": "jsonl", "train": _reviews(tmp_path / "train.jsonl", 60, long_rows=2),
                              "test": _reviews(tmp_path / "test.jsonl", 12),
                              "columns": {"input": "text", "label": "topic", "id": "id"}}, **data)


def test_a_text_column_becomes_token_ids_a_classifier_learns(tmp_path):
    data = load_dataset(_config(tmp_path, tokenizer=TOKENIZER, sequence_length=16))
    tokenizer = load_tokenizer(TOKENIZER)
    assert data.train.x.shape == (60, 16) and data.train.x.dtype == np.int64 and data.num_classes == 3
    expected = tokenizer(f"please {TOPICS[5 % 3]} now")["input_ids"]
    assert data.train.x[5, :len(expected)].tolist() == expected and (data.train.x[5, len(expected):] == 0).all()
    assert any("2 of 60 texts are longer than data.sequence_length 16" in note for note in data.notes), data.notes

    torch.manual_seed(0)
    model = text_classifier(16, 3, vocab_size=len(tokenizer), dim=16, hidden=16, pad_id=tokenizer.pad_token_id)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    accuracy = (model(torch.from_numpy(data.test.x)).argmax(1).numpy() == data.test.y).mean()
    assert accuracy == 1.0


def test_a_text_column_without_a_tokenizer_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"\.jsonl: column 'text' \(columns.input\) holds text; give data.tokenizer"):
        load_dataset(_config(tmp_path))


def test_a_streamed_block_of_text_rows_is_tokenized_as_in_memory(tmp_path):
    import pyarrow.json as pjson

    from ingest.file_data import to_stream_rows
    from ingest.streamed import stream_batch

    cfg = _config(tmp_path, tokenizer=TOKENIZER, sequence_length=16)
    cfg.source.stream = True
    data = load_dataset(cfg)
    rows = to_stream_rows(pjson.read_json(cfg.source.train), cfg.source, cfg.source.train)
    np.testing.assert_array_equal(rows["x"], data.teachers_train.x)
    batch = stream_batch(0, 0, {k: v[:4] for k, v in rows.items()})
    assert batch.x.dtype == np.int64 and batch.y.tolist() == data.teachers_train.y[:4].tolist()


def test_shape_probes_feed_a_text_classifier_token_ids():
    from teachers.backend import output_space_of

    assert output_space_of(text_classifier(16, 3, vocab_size=64), 16) == ("classes:3", 3)
