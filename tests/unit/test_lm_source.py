"""Your own language-model data (`ingest.lm_source`): prompt/completion and chat rows from
files, tokenized into the model's own layout, with every bad input refused by file, column and row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest import load_tokenizer
from ingest.config import DataConfig
from ingest.file_data import DataError
from ingest.lm_data import encode_examples
from ingest.loading import load_dataset

pytestmark = pytest.mark.usefixtures("own_cache")  # the driver's scans are cached there

TOKENIZER = str(Path(__file__).resolve().parents[2] / "ingest" / "tokenizers" / "stdlib-bpe-1024")
PAIRS = [(f"def f{i}(x):", f"Return the {i}th thing of x, or nothing at all when x is empty.") for i in range(40)]


def _jsonl(path: Path, lines: list[dict]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def _pairs_file(path: Path, pairs=PAIRS, start: int = 0) -> str:
    return _jsonl(path, [{"id": f"r{start + i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs)])


def _config(tokenizer: str = TOKENIZER, length: int = 32, **source) -> DataConfig:
    columns = source.pop("columns", {"prompt": "prompt", "completion": "completion", "id": "id"})
    return DataConfig(source={"format": "jsonl", "columns": columns, **source}, tokenizer=tokenizer,
                      sequence_length=length)


def test_prompt_completion_rows_become_the_bundled_token_layout(tmp_path):
    data = load_dataset(_config(train=_pairs_file(tmp_path / "train.jsonl"),
                                test=_pairs_file(tmp_path / "test.jsonl", PAIRS[:8], start=100)))
    tokenizer = load_tokenizer(TOKENIZER)
    assert data.kind == "lm" and data.num_classes == len(tokenizer) and data.output_space.startswith("tokens:1024:")
    np.testing.assert_array_equal(data.train.x, encode_examples(tokenizer, PAIRS, 32))
    assert len(data.test.x) == 8 and data.teachers_train is data.train
    assert len(data.train.labels(slice(0, 2))) > 0  # completion tokens are the targets
    assert data.notes == ()


def test_rows_longer_than_the_sequence_are_cut_and_counted(tmp_path):
    long = [("def g(x):", "word " * 80)] + PAIRS[:9]
    data = load_dataset(_config(train=_pairs_file(tmp_path / "train.jsonl", long), test_fraction=0.3, length=24))
    assert any("1 of" in note and "longer than data.sequence_length 24" in note for note in data.notes), data.notes
    assert len(data.train.x) + len(data.test.x) == 10 and data.train.x.shape[1] == 24


def _templated(tmp_path: Path, template: str) -> str:
    folder = tmp_path / "tokenizer"
    shutil.copytree(TOKENIZER, folder, dirs_exist_ok=True)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return str(folder)


TAGGED = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
          "{% if add_generation_prompt %}[assistant]{% endif %}")


def test_chat_messages_are_rendered_with_the_tokenizers_template_every_assistant_turn_taught(tmp_path):
    from ingest import CONTEXT, TARGET, token_ids, token_roles

    chat = [{"id": f"c{i}", "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
            for i, (p, c) in enumerate(PAIRS)]
    chat[0]["messages"] += [{"role": "user", "content": "again"}, {"role": "assistant", "content": "Twice."}]
    train = _jsonl(tmp_path / "chat.jsonl", chat)
    columns = {"messages": "messages", "id": "id"}
    with pytest.raises(DataError, match="chat.jsonl: column 'messages' .*holds chat messages, but the tokenizer has no"):
        load_dataset(_config(train=train, test_fraction=0.25, columns=columns))
    templated = _templated(tmp_path, TAGGED)
    data = load_dataset(_config(tokenizer=templated, train=train, test=train, columns=columns, length=64))
    tokenizer = load_tokenizer(templated)

    def text(row: np.ndarray, role: int) -> str:
        return tokenizer.decode(token_ids(row)[token_roles(row) == role])

    row = data.train.x[list(data.train.ids).index("c1")]
    assert text(row, CONTEXT) == f"[user] {PAIRS[1][0]}\n[assistant]" and text(row, TARGET) == f" {PAIRS[1][1]}\n"
    multi = data.train.x[list(data.train.ids).index("c0")]
    assert text(multi, TARGET) == f" {PAIRS[0][1]}\n Twice.\n"  # both assistant turns, not the user's between
    assert "[user] again" in text(multi, CONTEXT)

    bad = chat[:5] + [{"id": "c-bad", "messages": [{"role": "user", "content": "hi"}]}]
    with pytest.raises(DataError, match="row 5 \\(id c-bad\\) of column 'messages'.*at least one assistant turn"):
        load_dataset(_config(tokenizer=templated, train=_jsonl(tmp_path / "bad.jsonl", bad), test_fraction=0.25,
                             columns=columns))
    strict = _templated(tmp_path, "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}"
                        "{% endif %}" + TAGGED)
    system = chat[:5] + [{"id": "c-sys", "messages": [{"role": "system", "content": "x"}, *chat[6]["messages"]]}]
    with pytest.raises(DataError, match="row 5 \\(id c-sys\\): the tokenizer's chat template failed on it: .*no "
                                        "system turns"):
        load_dataset(_config(tokenizer=strict, train=_jsonl(tmp_path / "sys.jsonl", system), test_fraction=0.25,
                             columns=columns))


def test_a_row_whose_prompt_fills_the_sequence_is_refused_by_file_row_and_id(tmp_path):
    rows = PAIRS[:6] + [("def " + "very_long_argument, " * 20, "Short.")]
    train = _pairs_file(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train.jsonl: row \d+ \(id r6\) has no token to learn within "
                                        r"data.sequence_length 24 .*shorten the prompts"):
        load_dataset(_config(train=train, test=train, length=24))


def test_bad_language_model_rows_and_configs_are_refused(tmp_path):
    train = _pairs_file(tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="train.jsonl: no column 'answer' \\(columns.completion\\)"):
        load_dataset(_config(train=train, test_fraction=0.25,
                             columns={"prompt": "prompt", "completion": "answer", "id": "id"}))
    numbers = _jsonl(tmp_path / "numbers.jsonl", [{"id": f"n{i}", "prompt": "p", "completion": i} for i in range(8)])
    with pytest.raises(DataError, match="numbers.jsonl: column 'completion' \\(columns.completion\\) must hold text"):
        load_dataset(_config(train=numbers, test_fraction=0.25))
    with pytest.raises(ValueError, match="tokenizer: a language-model source needs data.tokenizer"):
        DataConfig(source={"format": "jsonl", "train": train, "test_fraction": 0.2,
                           "columns": {"prompt": "prompt", "completion": "completion"}})
    with pytest.raises(ValueError, match="one kind only"):
        _config(train=train, test_fraction=0.2, columns={"prompt": "prompt", "completion": "completion",
                                                          "input": "x", "label": "y"})
    with pytest.raises(ValueError, match="columns.id: a streamed source needs a stable row id column"):
        DataConfig(source={"format": "jsonl", "train": train, "test_fraction": 0.2, "stream": True,
                           "columns": {"prompt": "prompt", "completion": "completion"}}, tokenizer=TOKENIZER)
    with pytest.raises(ValueError, match="data.generated: the teachers' completions replace the students' split"):
        DataConfig(source={"format": "jsonl", "train": train, "test_fraction": 0.2, "stream": True,
                           "columns": {"prompt": "prompt", "completion": "completion", "id": "id"}},
                   tokenizer=TOKENIZER, generated=str(tmp_path))


def test_plain_text_files_are_one_row_per_line_the_whole_line_the_completion(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"line {i} of the first file, a plain sentence.\n\n" for i in range(12)))
    (tmp_path / "b.txt").write_text("\n".join(f"and line {i} of the second." for i in range(8)))
    data = load_dataset(DataConfig(source={"format": "text", "train": str(tmp_path / "*.txt"), "test_fraction": 0.25},
                                   tokenizer=TOKENIZER, sequence_length=32))
    assert data.kind == "lm" and len(data.train.x) + len(data.test.x) == 20  # empty lines are no rows
    ids = set(data.train.ids) | set(data.test.ids)
    assert "a.txt:1" in ids and "a.txt:2" not in ids and "b.txt:8" in ids
    tokenizer = load_tokenizer(TOKENIZER)
    row = list(data.train.ids).index(next(i for i in data.train.ids if i.startswith("b.txt:")))
    number = int(data.train.ids[row].split(":")[1]) - 1
    np.testing.assert_array_equal(data.train.x[row], encode_examples(tokenizer, [("", f"and line {number} of the second.")], 32)[0])
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe not utf-8 \xc3")
    with pytest.raises(DataError, match=r"c\.txt: not UTF-8 text"):
        load_dataset(DataConfig(source={"format": "text", "train": str(tmp_path / "*.txt"), "test_fraction": 0.25},
                                tokenizer=TOKENIZER))
    with pytest.raises(ValueError, match="a text source's rows are its files' lines"):
        DataConfig(source={"format": "text", "train": "x", "test_fraction": 0.2, "columns": {"prompt": "p",
                                                                                           "completion": "c"}},
                   tokenizer=TOKENIZER)


def test_a_streamed_language_model_source_is_scanned_on_the_driver_and_tokenized_in_blocks(tmp_path):
    import pyarrow.json as pjson

    from ingest import target_labels
    from ingest.lm_source import to_lm_stream_rows
    from ingest.streamed import stream_batch

    train = _pairs_file(tmp_path / "train.jsonl")
    transfer = _pairs_file(tmp_path / "transfer.jsonl", PAIRS[:24], start=200)
    test = _pairs_file(tmp_path / "test.jsonl", PAIRS[:8], start=100)
    in_memory = load_dataset(_config(train=train, test=test, transfer=transfer))
    cfg = _config(train=train, test=test, transfer=transfer, stream=True)
    driver = load_dataset(cfg)
    assert driver.streamed.rows == 24 and len(driver.train.x) == 0 and len(driver.teachers_train.x) == 40
    assert driver.streamed.target_tokens == len(in_memory.train.labels(slice(None)))
    assert driver.fingerprint == in_memory.fingerprint  # an offline store serves both
    worker = load_dataset(cfg, in_worker=True)
    assert len(worker.train.x) == 0 and worker.train.token_sequences
    np.testing.assert_array_equal(worker.test.x, in_memory.test.x)

    block = to_lm_stream_rows(pjson.read_json(transfer), cfg, transfer)
    np.testing.assert_array_equal(block["x"], in_memory.train.x)
    assert block["id"].tolist() == in_memory.train.ids.tolist()
    batch = stream_batch(0, 0, {k: v[:4] for k, v in block.items()}, in_memory.train.token_sequences)
    assert batch.x.dtype == np.int64
    np.testing.assert_array_equal(batch.y, target_labels(in_memory.train.x[:4]))

    held = load_dataset(_config(train=train, test_fraction=0.25, stream=True), in_worker=True)
    block = to_lm_stream_rows(pjson.read_json(train), _config(train=train, test_fraction=0.25, stream=True), train)
    assert len(held.test.x) + len(block["x"]) == 40 and not set(held.test.ids) & set(block["id"].tolist())
    sent = load_dataset(_config(train=str(tmp_path / "gone.jsonl"), test_fraction=0.25, stream=True), in_worker=True,
                        test=held.test)  # the driver's test split: no file read
    assert sent.test is held.test and sent.kind == "lm" and sent.tokenizer_hash == held.tokenizer_hash
    assert sent.train.x.shape == held.train.x.shape


def test_streamed_text_files_give_the_rows_and_ids_of_the_in_memory_path(tmp_path):
    import pyarrow as pa

    from ingest.lm_source import to_lm_stream_rows

    (tmp_path / "a.txt").write_text("".join(f"line {i} of the first file.\n\n" for i in range(30)))
    (tmp_path / "b.txt").write_text("\n".join(f"and line {i} of the second." for i in range(10)))
    (tmp_path / "blank.txt").write_text("\n \n")  # no line: no row, and no error while other files have lines
    source = {"format": "text", "train": str(tmp_path / "*.txt"), "test_fraction": 0.25}
    in_memory = load_dataset(DataConfig(source=source, tokenizer=TOKENIZER, sequence_length=32))
    cfg = DataConfig(source={**source, "stream": True}, tokenizer=TOKENIZER, sequence_length=32)
    driver = load_dataset(cfg)
    assert driver.streamed.rows == len(in_memory.train.x) and driver.fingerprint == in_memory.fingerprint
    worker = load_dataset(cfg, in_worker=True)
    assert worker.test.ids.tolist() == in_memory.test.ids.tolist()
    np.testing.assert_array_equal(worker.test.x, in_memory.test.x)

    files = sorted(str(p) for p in tmp_path.glob("*.txt"))  # a block as ray.data.read_binary_files makes it
    block = pa.table({"bytes": [Path(f).read_bytes() for f in files], "path": files})
    rows = to_lm_stream_rows(block, cfg, cfg.source.train)
    assert rows["id"].tolist() == in_memory.train.ids.tolist()
    np.testing.assert_array_equal(rows["x"], in_memory.train.x)
