"""Every streamed format through Ray Data on the session's cluster: the students' dataset
(`orchestration.stream_data.students_dataset`, what the TorchTrainer splits between its workers)
of text files, a saved Hugging Face dataset and an image folder holds exactly the rows, ids and
inputs the in-memory path reads from the same files, so a store or a resume keyed by row id
means the same rows either way."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from ingest.config import DataConfig
from ingest.loading import load_dataset

pytestmark = pytest.mark.integration
TOKENIZER = str(Path(__file__).resolve().parents[2] / "ingest" / "tokenizers" / "stdlib-bpe-1024")


def _streamed_rows(cfg: DataConfig) -> dict[str, np.ndarray]:
    """The students' dataset read through Ray Data in a task on the cluster: Ray Data's
    executor threads stay out of the test process (the suite parses files with `ast` later,
    which Python 3.11 does not allow in two threads at once)."""
    import ray

    return ray.get(ray.remote(_read_stream).options(num_cpus=0.25).remote(cfg))


def _read_stream(cfg: DataConfig) -> dict[str, np.ndarray]:
    from orchestration.stream_data import students_dataset

    dataset = students_dataset(cfg)
    dataset.context.execution_options.preserve_order = True  # as the trainer's data config keeps it
    blocks = list(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    return {key: np.concatenate([b[key] for b in blocks]) for key in ("id", "x", "y")}


def _same_rows(cfg: DataConfig, streamed: dict[str, np.ndarray]) -> None:
    in_memory = load_dataset(cfg.model_copy(update={"source": cfg.source.model_copy(update={"stream": False})}))
    assert streamed["id"].astype(str).tolist() == in_memory.train.ids.tolist()
    np.testing.assert_array_equal(streamed["x"], in_memory.train.x)
    if in_memory.kind != "lm":
        np.testing.assert_array_equal(streamed["y"], in_memory.train.y)


def test_streamed_text_files_are_the_lines_the_in_memory_path_reads(ray_cluster, tmp_path):
    for name, count in (("a", 40), ("b", 25)):
        (tmp_path / f"{name}.txt").write_text("".join(f"line {i} of file {name}, a plain sentence.\n\n"
                                                      for i in range(count)))
    cfg = DataConfig(source={"format": "text", "train": str(tmp_path / "*.txt"), "test_fraction": 0.2,
                             "stream": True}, tokenizer=TOKENIZER, sequence_length=24)
    streamed = _streamed_rows(cfg)
    assert 40 < len(streamed["id"]) < 65 and streamed["x"].dtype == np.int64  # the held-out lines are not streamed
    _same_rows(cfg, streamed)


def test_a_streamed_saved_dataset_of_images_is_decoded_in_its_read_tasks(ray_cluster, tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    def png(level: int) -> bytes:
        out = io.BytesIO()
        Image.new("L", (6, 6), level).save(out, "PNG")
        return out.getvalue()

    rows = {"img": [{"bytes": png(40 * (i % 5)), "path": None} for i in range(90)], "label": [i % 5 for i in range(90)]}
    split = datasets.Dataset.from_dict(rows).cast_column("img", datasets.Image()).shuffle(seed=1)
    split.save_to_disk(str(tmp_path / "train"), num_shards=3)
    cfg = DataConfig(source={"format": "hf_dataset", "train": str(tmp_path / "train"), "test_fraction": 0.2,
                             "columns": {"input": "img", "label": "label"}, "image": {"size": 3, "channels": 1},
                             "num_classes": 5, "stream": True})
    streamed = _streamed_rows(cfg)
    assert streamed["x"].shape[1] == 9 and len(set(streamed["y"].tolist())) == 5
    _same_rows(cfg, streamed)


def test_a_streamed_image_folder_is_decoded_as_in_memory(ray_cluster, tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (8, 8), (20 * i, 100 if label == "dog" else 0, 50)).save(
                tmp_path / "train" / label / f"{i}.png")
    cfg = DataConfig(source={"format": "images", "train": str(tmp_path / "train"), "test_fraction": 0.25,
                             "image": {"size": 4, "channels": 3}, "stream": True, "num_classes": 2})
    _same_rows(cfg, _streamed_rows(cfg))
