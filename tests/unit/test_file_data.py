"""Your own data from files (`data.source`): each format, the splits, and every bad input
refused with the file, the column and the row."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from ingest.config import DataConfig
from ingest.file_data import DataError
from ingest.loading import load_dataset

pytestmark = pytest.mark.usefixtures("own_cache")  # the driver's scans are cached there

ROWS, FEATURES, CLASSES = 60, 5, 3


def _rows(n: int = ROWS, seed: int = 0, classes: int = CLASSES) -> dict:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, FEATURES)).astype(np.float32) + y[:, None]
    return {"key": [f"r{seed}-{i}" for i in range(n)], "pixels": x.tolist(), "digit": y.tolist(),
            "task": (y // 2).tolist()}


def _parquet(path, rows: dict) -> str:
    pq.write_table(pa.table(rows), path)
    return str(path)


def _config(**source) -> DataConfig:
    columns = source.pop("columns", {"input": "pixels", "label": "digit", "id": "key"})
    return DataConfig(source={"format": "parquet", "columns": columns, **source})


def test_parquet_with_a_test_file_gives_the_splits_and_classes(tmp_path):
    data = load_dataset(_config(train=_parquet(tmp_path / "train.parquet", _rows()),
                                test=_parquet(tmp_path / "test.parquet", _rows(30, seed=1))))
    assert data.train.x.shape == (ROWS, FEATURES) and data.test.x.shape == (30, FEATURES)
    assert data.num_classes == CLASSES and data.output_space == "classes:3" and data.teachers_train is data.train
    np.testing.assert_allclose(data.train.x[7], _rows()["pixels"][7], rtol=1e-6)


def test_a_glob_of_files_and_a_held_out_fraction_decided_by_row_id(tmp_path):
    rows = _rows()
    half = {k: v[:30] for k, v in rows.items()}, {k: v[30:] for k, v in rows.items()}
    _parquet(tmp_path / "part-0.parquet", half[0])
    _parquet(tmp_path / "part-1.parquet", half[1])
    data = load_dataset(_config(train=str(tmp_path / "part-*.parquet"), test_fraction=0.25))
    assert len(data.train.y) + len(data.test.y) == ROWS and 5 <= len(data.test.y) <= 25
    # the same rows in another order and other files: the same rows are held out
    shuffled = {k: list(reversed(v)) for k, v in rows.items()}
    again = load_dataset(_config(train=_parquet(tmp_path / "all.parquet", shuffled), test_fraction=0.25))
    assert sorted(map(tuple, again.test.x.tolist())) == sorted(map(tuple, data.test.x.tolist()))


def test_jsonl_and_csv_with_feature_columns_and_a_task_column(tmp_path):
    rows = _rows()
    with open(tmp_path / "train.jsonl", "w") as out:
        for i in range(ROWS):
            out.write(json.dumps({"pixels": rows["pixels"][i], "digit": rows["digit"][i]}) + "\n")
    jsonl = load_dataset(DataConfig(source={"format": "jsonl", "train": str(tmp_path / "train.jsonl"),
                                            "test_fraction": 0.3, "columns": {"input": "pixels", "label": "digit"}}))
    assert jsonl.train.x.shape[1] == FEATURES
    table = pa.table({**{f"f{j}": [r[j] for r in rows["pixels"]] for j in range(FEATURES)},
                      "digit": rows["digit"], "task": rows["task"]})
    pcsv.write_csv(table, tmp_path / "train.csv")
    csv = load_dataset(DataConfig(source={"format": "csv", "train": str(tmp_path / "train.csv"), "test_fraction": 0.3,
                                          "columns": {"input": [f"f{j}" for j in range(FEATURES)], "label": "digit",
                                                      "task": "task"}}))
    assert csv.train.x.shape[1] == FEATURES and set(csv.train.columns["task"].tolist()) == {0, 1}


def test_a_transfer_set_lacking_a_class_is_the_students_while_teachers_train_on_train(tmp_path):
    rows = _rows()
    keep = [i for i, y in enumerate(rows["digit"]) if y != 2]
    transfer = {k: [v[i] for i in keep] for k, v in _rows(seed=2).items()}
    data = load_dataset(_config(train=_parquet(tmp_path / "train.parquet", rows), test_fraction=0.2,
                                transfer=_parquet(tmp_path / "transfer.parquet", transfer)))
    assert 2 not in set(data.train.y.tolist()) and 2 in set(data.teachers_train.y.tolist())
    assert data.num_classes == CLASSES


def _refused(tmp_path, match: str, rows=None, **source) -> None:
    source.setdefault("train", _parquet(tmp_path / "train.parquet", rows or _rows()))
    source.setdefault("test_fraction", 0.25)
    with pytest.raises(DataError, match=match):
        load_dataset(_config(**source))


def test_missing_files_and_empty_globs_are_refused(tmp_path):
    _refused(tmp_path, "no file matches", train=str(tmp_path / "nothing.parquet"))
    _refused(tmp_path, "no file matches", train=str(tmp_path / "none-*.parquet"))


def test_a_role_naming_a_missing_column_or_a_wrong_type_is_refused(tmp_path):
    _refused(tmp_path, r"no column \['image'\] \(columns.input\)", columns={"input": "image", "label": "digit"})
    rows = _rows()
    rows["digit"] = [str(v) for v in rows["digit"]]
    _refused(tmp_path, r"column 'digit' \(columns.label\) must hold integers", rows=rows)


def test_vectors_of_varying_length_name_the_row(tmp_path):
    rows = _rows()
    rows["pixels"][17] = rows["pixels"][17][:3]
    _refused(tmp_path, r"varying length.*row 17 of the split, id r0-17", rows=rows)


def test_labels_outside_the_output_space_and_classes_only_in_test_are_refused(tmp_path):
    _refused(tmp_path, r"label 2 at row \d+ of the split \(id r0-\d+\) is outside the output space 0..1",
             num_classes=2)
    test = _rows(30, seed=1, classes=4)
    _refused(tmp_path, r"the test split has classes \[3\]", test=_parquet(tmp_path / "test.parquet", test),
             num_classes=4, test_fraction=None)


def test_files_of_one_split_with_different_schemas_and_repeated_ids_are_refused(tmp_path):
    rows = _rows()
    _parquet(tmp_path / "a-0.parquet", rows)
    _parquet(tmp_path / "a-1.parquet", {**rows, "digit": [float(v) for v in rows["digit"]]})
    _refused(tmp_path, r"a-1.parquet: its columns .* differ", train=str(tmp_path / "a-*.parquet"))
    rows["key"][5] = rows["key"][4]
    _refused(tmp_path, r"row ids repeat \(\['r0-4'\]\)", rows=rows)


def test_a_split_left_empty_is_refused(tmp_path):
    _refused(tmp_path, "leaves an empty test split", rows={k: v[:2] for k, v in _rows().items()}, test_fraction=0.01)


def test_a_source_run_takes_no_bundled_dataset_keys():
    with pytest.raises(ValueError, match="dataset: a run with data.source reads its own files"):
        DataConfig(dataset="stdlib_functions", source={"format": "csv", "train": "x.csv", "test_fraction": 0.1,
                                             "columns": {"input": "x", "label": "y"}})


def test_a_glob_of_parquet_files_on_an_s3_compatible_server(s3_server):
    s3, options = s3_server
    rows = _rows()
    for part in range(2):
        pq.write_table(pa.table({k: v[part * 30:(part + 1) * 30] for k, v in rows.items()}),
                       f"runs-data/train/part-{part}.parquet", filesystem=s3)
    pq.write_table(pa.table(_rows(30, seed=1)), "runs-data/test.parquet", filesystem=s3)
    data = load_dataset(_config(train=f"s3://runs-data/train/*.parquet?{options}",
                                test=f"s3://runs-data/test.parquet?{options}"))
    assert data.train.x.shape == (ROWS, FEATURES) and len(data.test.y) == 30
    np.testing.assert_allclose(data.train.x[45], rows["pixels"][45], rtol=1e-6)
    with pytest.raises(DataError, match="no file matches"):
        load_dataset(_config(train=f"s3://runs-data/nothing/*.parquet?{options}", test_fraction=0.2))


def test_a_uri_of_a_filesystem_pyarrow_cannot_open_is_refused(tmp_path):
    with pytest.raises(DataError, match="pyarrow cannot open this URI"):
        load_dataset(_config(train="nosuchfs://bucket/train.parquet", test_fraction=0.2))


def test_a_hugging_face_dataset_saved_to_disk_with_an_image_feature(tmp_path):
    datasets = pytest.importorskip("datasets")
    import io

    from PIL import Image

    def png(level: int) -> bytes:
        out = io.BytesIO()
        Image.new("L", (4, 4), level).save(out, "PNG")
        return out.getvalue()

    rows = _rows()
    features = datasets.Dataset.from_dict(rows)
    features.save_to_disk(str(tmp_path / "features"))
    data = load_dataset(_config(format="hf_dataset", train=str(tmp_path / "features"), test_fraction=0.25))
    assert len(data.train.y) + len(data.test.y) == ROWS and data.train.x.shape[1] == FEATURES
    assert set(data.train.ids) | set(data.test.ids) == set(rows["key"])

    images = datasets.Dataset.from_dict({"img": [{"bytes": png(255 * (i % 2)), "path": None} for i in range(20)],
                                         "label": [i % 2 for i in range(20)]}).cast_column("img", datasets.Image())
    datasets.DatasetDict({"train": images, "test": images}).save_to_disk(str(tmp_path / "images"))
    cfg = lambda train: DataConfig(source={  # noqa: E731
        "format": "hf_dataset", "train": train, "test": str(tmp_path / "images" / "test"),
        "columns": {"input": "img", "label": "label"}, "image": {"size": 2, "channels": 1}})
    data = load_dataset(cfg(str(tmp_path / "images" / "train")))
    np.testing.assert_allclose(data.train.x, data.train.y[:, None].repeat(4, axis=1).astype(np.float32))
    with pytest.raises(DataError, match=r"a DatasetDict of splits \['test', 'train'\]; give one split's folder"):
        load_dataset(cfg(str(tmp_path / "images")))
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        load_dataset(cfg(str(tmp_path / "nothing")))


def test_a_saved_dataset_streams_in_read_tasks_with_the_ids_of_the_in_memory_path(tmp_path):
    datasets = pytest.importorskip("datasets")
    from ingest.file_data import to_stream_rows
    from ingest.hf_data import hf_datasource

    rows = _rows()
    shuffled = datasets.Dataset.from_dict(rows).shuffle(seed=0)  # indices, which save_to_disk applies
    shuffled.save_to_disk(str(tmp_path / "split"), num_shards=3)
    source = {"format": "hf_dataset", "train": str(tmp_path / "split"), "test_fraction": 0.25,
              "columns": {"input": "pixels", "label": "digit"}}
    in_memory = load_dataset(DataConfig(source=source))
    assert in_memory.train.ids[0].startswith("split:")  # no id column: the folder and the row's number
    streamed = DataConfig(source={**source, "stream": True, "num_classes": CLASSES})
    driver = load_dataset(streamed)
    assert driver.streamed.rows == len(in_memory.train.y) and driver.fingerprint == in_memory.fingerprint
    worker = load_dataset(streamed, in_worker=True)
    assert worker.test.ids.tolist() == in_memory.test.ids.tolist()

    tasks = hf_datasource(str(tmp_path / "split"), None).get_read_tasks(8)
    assert len(tasks) == 3 and sum(t.metadata.num_rows for t in tasks) == ROWS  # one read task per Arrow file
    blocks = [to_stream_rows(block, streamed.source, streamed.source.train) for task in tasks for block in task()]
    np.testing.assert_array_equal(np.concatenate([b["id"] for b in blocks]).astype(str), in_memory.train.ids)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in blocks]), in_memory.train.x)


def test_a_cached_teacher_is_keyed_by_what_the_teachers_read_not_how_students_read_it(tmp_path):
    from cluster import ModelSpec
    from orchestration.teacher_training import cache_key
    from teachers import TeacherTrainingConfig, resolve_model

    rows = _rows()
    train, test = _parquet(tmp_path / "train.parquet", rows), _parquet(tmp_path / "test.parquet", _rows(30, seed=1))
    transfer = _parquet(tmp_path / "transfer.parquet", _rows(20, seed=2))
    model = resolve_model(ModelSpec(factory="models.zoo:mlp"), in_features=FEATURES, num_classes=CLASSES)

    def key(cfg: DataConfig) -> str:
        return cache_key(model, TeacherTrainingConfig(), cfg, load_dataset(cfg))

    first = key(_config(train=train, test=test))
    reordered = _parquet(tmp_path / "reordered.parquet", {k: list(reversed(v)) for k, v in rows.items()})
    assert key(_config(train=reordered, test=test)) == first
    assert key(_config(train=train, test=test, transfer=transfer, num_classes=CLASSES)) == first
    changed = {**rows, "digit": [(d + 1) % CLASSES for d in rows["digit"]]}
    assert key(_config(train=_parquet(tmp_path / "changed.parquet", changed), test=test)) != first
