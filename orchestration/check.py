"""`distillery check CONFIG`: the config and its data, checked without starting Ray.

It validates the config, opens every split the data names (a user's files, or a bundled
set), checks each column role, and prints what a run would train on: rows per split, input
width, classes and their counts (or tokens, for text). `distillery run` runs the same loading
before any teacher is trained, so a run refuses the same problems.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from rich.console import Console
from rich.table import Table

from ingest import Split, StreamedSplit, load_dataset
from orchestration.config import load_run_config


def _describe(split: Split | StreamedSplit, kind: str) -> dict[str, Any]:
    if isinstance(split, StreamedSplit):
        return {"rows": split.rows, "target tokens": split.target_tokens} if kind == "lm" else _by_class(
            split.rows, split.class_counts)
    if kind == "lm":
        return {"rows": len(split.x), "target tokens": int(len(split.labels(slice(None))))}
    return _by_class(len(split.x), np.bincount(split.y) if kind == "classification" and len(split.y) else np.array([]))


def _by_class(rows: int, counts: np.ndarray) -> dict[str, Any]:
    return {"rows": rows, "classes present": int((counts > 0).sum()) if len(counts) else "",
            "per class (min-max)": f"{counts[counts > 0].min()}-{counts.max()}" if len(counts) else ""}


def data_progress(console: Console) -> Callable[[str], None]:
    """Where the driver's scan of a streamed source reports how it goes: `data: ...` lines."""
    return lambda line: console.print(f"data: {line}", highlight=False)


def check(config_path: str, console: Console, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Validate `config_path` and load its data; print and return a summary."""
    cfg = load_run_config(config_path, overrides)
    dataset = load_dataset(cfg.data, progress=data_progress(console))
    splits = {"train (students)": dataset.train, "test": dataset.test}
    if dataset.streamed is not None:
        splits = {"train (students, streamed)": dataset.streamed, "test": dataset.test}
    if dataset.teacher_train is not None:
        splits["train (teachers)"] = dataset.teacher_train
    elif dataset.teacher_rows is not None and dataset.teacher_rows.scan is not dataset.streamed:
        splits["train (teachers, scanned)"] = dataset.teacher_rows.scan  # read where a teacher trains on it
    table = Table(title=f"{config_path}: data {dataset.name} ({dataset.kind}, output space {dataset.output_space})")
    rows = {name: _describe(split, dataset.kind) for name, split in splits.items()}
    columns = list(next(iter(rows.values())))
    table.add_column("split")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(str(row[c]) for c in columns))
    console.print(table)
    lines = [f"input: {dataset.train.x.shape[1:]} ({dataset.train.x.dtype})" if dataset.kind != "lm" else
             f"token sequences of {dataset.train.x.shape[1]} over a vocabulary of {dataset.num_classes}"]
    if dataset.cross_modal:
        lines.append(f"the teachers read their own input: {dataset.train.teacher_x.shape[1:]}")
    lines.append(f"columns: {', '.join(sorted(dataset.train.columns)) or 'none'}")
    if dataset.class_names:
        lines.append(f"classes (the class folders): {', '.join(dataset.class_names)}")
    if dataset.streamed is not None:
        lines.append("the students' split streams to the train workers through Ray Data (data.source.stream)")
    if cfg.data.student_train_samples is not None and cfg.data.student_train_samples < len(dataset.train.x):
        lines.append(f"the students see the first {cfg.data.student_train_samples} rows of their split "
                     f"(data.student_train_samples)")
    console.print("; ".join(lines) + f". Run {cfg.run.name!r} is ready.", highlight=False)
    for note in dataset.notes:
        console.print(f"note: {note}", highlight=False)
    return {"dataset": dataset.name, "kind": dataset.kind, "output_space": dataset.output_space, "splits": rows,
            "notes": list(dataset.notes)}
