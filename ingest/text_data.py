"""English text that is on every machine: the docstrings of Python's standard library.

The docstrings of the stdlib's modules, classes and functions (files in sorted order, tests
left out) are tokenized with `data.tokenizer` and cut into windows of `data.sequence_length`
tokens ([CLS] ... [SEP], no padding). Every fifth file is held out: test windows come from
modules the students never saw. The text differs slightly between Python versions, so
figures name the Python version they were measured with.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Iterator

import numpy as np

HELD_OUT_EVERY = 5


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text and len(text.split()) >= 5:
                yield " ".join(text.split())


def token_windows(tokenizer, length: int, train_windows: int, test_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) int64 windows [N, length]; reads files until both splits are full."""
    if length < 8:
        raise ValueError(f"data.sequence_length must be at least 8 tokens, got {length}")
    body = length - 2
    wanted = {"train": train_windows * body, "test": test_windows * body}
    streams: dict[str, list[int]] = {"train": [], "test": []}
    for i, path in enumerate(stdlib_files()):
        split = "test" if i % HELD_OUT_EVERY == 0 else "train"
        if len(streams[split]) >= wanted[split]:
            if all(len(streams[s]) >= wanted[s] for s in streams):
                break
            continue
        for text in docstrings(path):
            streams[split] += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    out = []
    for split, count in (("train", train_windows), ("test", test_windows)):
        tokens = np.asarray(streams[split][: count * body], dtype=np.int64)
        if len(tokens) < count * body:
            raise ValueError(f"the standard library's docstrings give only {len(tokens) // body} {split} windows of "
                             f"{length} tokens; lower data.{split}_windows")
        windows = tokens.reshape(count, body)
        cls = np.full((count, 1), tokenizer.cls_token_id, dtype=np.int64)
        sep = np.full((count, 1), tokenizer.sep_token_id, dtype=np.int64)
        out.append(np.concatenate([cls, windows, sep], axis=1))
    return out[0], out[1]
