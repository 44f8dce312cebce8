"""The bundled datasets as built-in sources: each is a table of rows with a column per role,
read by the same code as a user's files (`ingest.file_data.rows_dataset`,
`ingest.lm_source.lm_rows_dataset`), so the column roles, the checks and the row ids are one
path. Only the tables come from here:

- `digits`: scikit-learn's 8x8 digits, `id` (`digit-<row>`), `pixels`, `digit`, `task`
  (digit // 2), split stratified by class with `data.split_seed`;
- `digits_views`: the same digits as two sensor views joined by pair id (`ingest.paired_data`),
  the student's view as `input` and the teachers' as `teacher_input`;
- `stdlib_functions`: the standard library's functions as `prompt` (signature) and
  `completion` (docstring) rows, the training rows shuffled with `data.split_seed`.

`stdlib_docstrings` (windows of tokens for sentence embeddings) has no rows of a source's kind
and keeps its own loader (`ingest.loading`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ingest.config import DataConfig, SourceColumns, SourceConfig
from ingest.file_read import SourceRows
from ingest.splits import Dataset


def builtin_dataset(cfg: DataConfig) -> Optional[Dataset]:
    """The bundled dataset `cfg.dataset` read as a source (None for one that is not a source)."""
    if cfg.dataset == "stdlib_functions":
        from ingest.lm_source import lm_rows_dataset

        train, test = function_tables(cfg)
        source = _source(cfg.dataset, SourceColumns(prompt="prompt", completion="completion", id="id"))
        return lm_rows_dataset(cfg.dataset, cfg, source, _rows(train, source), _rows(test, source), bundled=True)
    if cfg.dataset not in ("digits", "digits_views"):
        return None
    from ingest.file_data import rows_dataset

    cross_modal = cfg.dataset == "digits_views" and cfg.teacher_column != cfg.student_column
    columns = SourceColumns(input="pixels", label="digit", id="id", task="task",
                            teacher_input="teacher_pixels" if cross_modal else None)
    train, test = digit_tables(cfg) if cfg.dataset == "digits" else digit_view_tables(cfg)
    source = _source(cfg.dataset, columns)
    return rows_dataset(cfg.dataset, source, _rows(train, source), _rows(test, source))


def _source(name: str, columns: SourceColumns) -> SourceConfig:
    """The source a bundled set's tables are read as: its column roles; errors name the set."""
    return SourceConfig.model_construct(format="parquet", train=f"{name} (bundled, train split)",
                                        test=f"{name} (bundled, test split)", columns=columns)


def _rows(table: pa.Table, source: SourceConfig) -> SourceRows:
    return SourceRows(table.append_column("__id", table.column(source.columns.id)), [source.train])


def _vectors(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def digit_tables(cfg: DataConfig) -> tuple[pa.Table, pa.Table]:
    x, y = digit_images()
    train_idx, test_idx = stratified_split(y, cfg.test_fraction, cfg.split_seed)

    def table(rows: np.ndarray) -> pa.Table:
        return pa.table({"id": np.char.add("digit-", rows.astype(str)), "pixels": _vectors(x[rows]),
                         "digit": y[rows], "task": y[rows] // 2})

    return table(train_idx), table(test_idx)


def digit_view_tables(cfg: DataConfig) -> tuple[pa.Table, pa.Table]:
    """The digits' two views, each logged in its own order by its sensor, joined by pair id."""
    from ingest.paired_data import digit_view, join_pairs, sensor_table

    pixels, labels = digit_images()
    pair_ids = np.arange(len(labels), dtype=np.int64)
    teacher_ids, teacher_values = sensor_table(pair_ids, digit_view(pixels, cfg.teacher_column), seed=1)
    student_ids, student_values = sensor_table(pair_ids, digit_view(pixels, cfg.student_column), seed=2)
    label_ids, label_values = sensor_table(pair_ids, labels, seed=3)
    t_rows, s_rows = join_pairs(teacher_ids, student_ids)
    paired, l_rows = join_pairs(teacher_ids[t_rows], label_ids)
    ids, y = teacher_ids[t_rows][paired], label_values[l_rows]
    x_teacher, x_student = teacher_values[t_rows][paired], student_values[s_rows][paired]
    train_idx, test_idx = stratified_split(y, cfg.test_fraction, cfg.split_seed)

    def table(rows: np.ndarray) -> pa.Table:
        columns = {"id": np.char.add("pair-", ids[rows].astype(str)), "pixels": _vectors(x_student[rows]),
                   "teacher_pixels": _vectors(x_teacher[rows]), "digit": y[rows], "task": y[rows] // 2}
        return pa.table(columns)

    return table(train_idx), table(test_idx)


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float32 pixels in [0, 1] and int64 labels (ships inside
    scikit-learn: no download)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    return (raw.data / 16.0).astype(np.float32), raw.target.astype(np.int64)  # pixel counts are 0..16


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(shuffled train rows, sorted test rows), `test_fraction` of every class held out."""
    rng = np.random.default_rng(seed)
    test_idx, train_idx = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return rng.permutation(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def function_tables(cfg: DataConfig) -> tuple[pa.Table, pa.Table]:
    """The first `train_windows` and `test_windows` functions of each split, training rows
    shuffled with `split_seed`."""
    from ingest.lm_data import function_examples

    examples = function_examples()
    for split, wanted in (("train", cfg.train_windows), ("test", cfg.test_windows)):
        if wanted > len(examples[split]):
            raise ValueError(f"data.{split}_windows: the standard library has {len(examples[split])} {split} "
                             f"functions with docstrings, {wanted} were asked for")

    def table(split: str, rows: np.ndarray) -> pa.Table:
        pairs = [examples[split][i] for i in rows]
        return pa.table({"id": [f"{split}-function-{i}" for i in rows], "prompt": [p for p, _ in pairs],
                         "completion": [c for _, c in pairs]})

    order = np.random.default_rng(cfg.split_seed).permutation(cfg.train_windows)
    return table("train", order), table("test", np.arange(cfg.test_windows))
