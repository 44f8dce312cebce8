"""Image sources (`data.source.format: images`, or a column of image bytes): folders per class,
decoding, resizing and normalisation, the stream's blocks, and every bad image refused with
its file."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ingest.config import DataConfig
from ingest.file_data import DataError, to_stream_rows
from ingest.loading import load_dataset
from models.zoo import convnet

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _png(colour, side: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, "PNG")
    return out.getvalue()


def _folder(root, per_class: int = 4, classes=COLOURS) -> str:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{name}-{i}.png").write_bytes(_png(COLOURS[name]))
    (root / "README.txt").write_text("not an image: left out")
    return str(root)


def _config(**source) -> DataConfig:
    return DataConfig(source={"format": "images", "image": {"size": 2, "channels": 3}, **source})


def test_a_folder_per_class_gives_labels_ids_and_channel_first_pixels(tmp_path):
    data = load_dataset(_config(train=_folder(tmp_path / "train"), test=_folder(tmp_path / "test", 2)))
    assert data.class_names == ("blue", "green", "red") and data.num_classes == 3
    assert data.train.x.shape == (12, 3 * 2 * 2) and data.test.x.shape == (6, 12)
    red = data.train.x[data.train.y == 2]
    np.testing.assert_allclose(red[:, :4], 1.0)  # channel 0 (red) first, every pixel
    np.testing.assert_allclose(red[:, 4:], 0.0)
    assert convnet(12, 3, channels=(4, 4), in_channels=3)(__import__("torch").from_numpy(red)).shape == (4, 3)


def test_grey_images_are_resized_and_normalised(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (10, 4), 255).save(tmp_path / "a" / "white.png")
    Image.new("L", (3, 3), 0).save(tmp_path / "b" / "black.jpg")
    Image.new("L", (5, 5), 0).save(tmp_path / "b" / "black-2.bmp")
    data = load_dataset(DataConfig(source={"format": "images", "train": str(tmp_path), "test": str(tmp_path),
                                           "image": {"size": [3, 4], "channels": 1, "mean": [0.5], "std": [0.5]}}))
    assert data.train.x.shape == (3, 12) and data.train.y.tolist() == [0, 1, 1]
    np.testing.assert_allclose(data.train.x[0], 1.0)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(data.train.x[1:], -1.0)


def test_a_held_out_fraction_of_images_is_decided_by_their_path(tmp_path):
    first = load_dataset(_config(train=_folder(tmp_path / "one", per_class=20), test_fraction=0.3))
    again = load_dataset(_config(train=_folder(tmp_path / "two", per_class=20), test_fraction=0.3))
    assert 6 <= len(first.test.y) <= 30 and np.array_equal(first.test.y, again.test.y)


def test_image_bytes_in_a_parquet_column_are_decoded(tmp_path):
    names = list(COLOURS)
    table = pa.table({"key": [f"row{i}" for i in range(9)], "png": [_png(COLOURS[names[i % 3]]) for i in range(9)],
                      "label": [i % 3 for i in range(9)]})
    pq.write_table(table, tmp_path / "rows.parquet")
    data = load_dataset(DataConfig(source={
        "format": "parquet", "train": str(tmp_path / "rows.parquet"), "test_fraction": 0.4,
        "columns": {"input": "png", "label": "label", "id": "key"}, "image": {"size": 1, "channels": 3}}))
    x = np.concatenate([data.train.x, data.test.x])
    y = np.concatenate([data.train.y, data.test.y])
    np.testing.assert_allclose(x, np.eye(3, dtype=np.float32)[y])


def test_a_streamed_block_of_file_bytes_and_paths_gives_the_in_memory_rows(tmp_path):
    root = _folder(tmp_path / "train")
    cfg = _config(train=root, test=_folder(tmp_path / "test", 1), classes=["red", "green", "blue"])
    data = load_dataset(cfg)
    paths = sorted(str(p) for p in (tmp_path / "train").rglob("*.png"))
    block = pa.table({"bytes": [open(p, "rb").read() for p in paths], "path": paths})
    rows = to_stream_rows(block, cfg.source, cfg.source.train)
    assert rows["id"].tolist() == [p.split("train/")[1] for p in paths]
    order = np.argsort(rows["id"])
    np.testing.assert_array_equal(rows["y"][order], data.train.y)  # classes in the configured order
    np.testing.assert_allclose(rows["x"][order], data.train.x)


def test_an_unreadable_image_is_refused_with_its_file(tmp_path):
    root = _folder(tmp_path / "train")
    (tmp_path / "train" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"red/broken\.png: not a readable image"):
        load_dataset(_config(train=root, test_fraction=0.25))


def test_images_outside_class_folders_and_classes_train_lacks_are_refused(tmp_path):
    root = _folder(tmp_path / "train")
    (tmp_path / "train" / "loose.png").write_bytes(_png(COLOURS["red"]))
    with pytest.raises(DataError, match=r"loose\.png: an image outside any class folder"):
        load_dataset(_config(train=root, test_fraction=0.25))
    test = _folder(tmp_path / "test", classes={"red": 0, "green": 0})
    (tmp_path / "test" / "purple").mkdir()
    (tmp_path / "test" / "purple" / "p.png").write_bytes(_png((128, 0, 128)))
    with pytest.raises(DataError, match=r"test/purple: a class folder the train split does not have"):
        load_dataset(_config(train=_folder(tmp_path / "train-2"), test=test))


def test_a_missing_or_empty_folder_and_misused_keys_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(DataError, match="no image files"):
            load_dataset(_config(train=str(root), test_fraction=0.25))
    with pytest.raises(ValueError, match="an image folder's columns are fixed"):
        _config(train="x", test_fraction=0.2, columns={"input": "a", "label": "b"})
    with pytest.raises(ValueError, match="image.mean: give one value or 3"):
        _config(train="x", test_fraction=0.2, image={"channels": 3, "mean": [0.1, 0.2]})
    with pytest.raises(ValueError, match="classes: names the class folders"):
        DataConfig(source={"format": "parquet", "train": "x", "test_fraction": 0.2, "classes": ["a"],
                           "columns": {"input": "a", "label": "b"}})
