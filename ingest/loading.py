"""The configured dataset, loaded: the user's files (`data.source`) or a bundled set, every
split with row ids; and the transfer subset the students see."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from ingest.config import DataConfig
from ingest.splits import Dataset, Split


def load_dataset(cfg: DataConfig, *, in_worker: bool = False, test: Optional[Split] = None,
                 progress: Optional[Callable[[str], None]] = None, on_cluster: bool = False) -> Dataset:
    """Load the configured dataset: the user's files (`data.source`), or a bundled set split
    deterministically (stratified by class). `in_worker`: for a train worker, which reads a
    streamed source's training rows from its dataset shard instead, and its test split from
    `test` when the driver sends it (else from the files: rows held out of train take a pass
    over every train file). `progress` hears how the driver's scan of a streamed source goes;
    `on_cluster`: the scan runs as Ray tasks on the cluster this process is connected to
    (`ingest.cluster_scan`), else in this process. Every split has row ids."""
    dataset = _load(cfg, in_worker, test, progress, on_cluster)
    keyed = lambda split: None if split is None else split.keyed()  # noqa: E731
    return replace(dataset, train=keyed(dataset.train), test=keyed(dataset.test),
                   teacher_train=keyed(dataset.teacher_train))


def _load(cfg: DataConfig, in_worker: bool, test: Optional[Split], progress: Optional[Callable[[str], None]],
          on_cluster: bool) -> Dataset:
    if cfg.source is not None and cfg.source.stream and not in_worker:
        from ingest.streamed_source import streamed_source_dataset

        return streamed_source_dataset(cfg, progress, on_cluster)
    if cfg.source is not None and cfg.source.columns.language_model:
        from ingest.lm_source import load_lm_source

        return load_lm_source(cfg, streamed_students=in_worker and cfg.source.stream, test=test)
    if cfg.source is not None:
        from ingest.file_data import load_source

        return load_source(cfg.source, streamed_students=in_worker and cfg.source.stream, test=test)
    if cfg.dataset == "stdlib_docstrings":
        return _load_text(cfg)
    from ingest.bundled import builtin_dataset

    dataset = builtin_dataset(cfg)
    if dataset is None:
        raise ValueError(f"data.dataset: unknown dataset {cfg.dataset!r}; expected 'digits', 'digits_views', "
                         f"'stdlib_docstrings' or 'stdlib_functions'")
    return dataset


def _load_text(cfg: DataConfig) -> Dataset:
    from ingest.text_data import token_windows
    from ingest.tokenizer import load_tokenizer, tokenizer_hash

    tokenizer = load_tokenizer(cfg.tokenizer)
    train, test = token_windows(tokenizer, cfg.sequence_length, cfg.train_windows, cfg.test_windows)
    train = train[np.random.default_rng(cfg.split_seed).permutation(len(train))]
    return Dataset("stdlib_docstrings", Split(train, np.zeros(len(train), np.int64)),
                   Split(test, np.zeros(len(test), np.int64)), num_classes=cfg.embedding_dim, kind="embedding",
                   tokenizer_hash=tokenizer_hash(tokenizer))


def student_subset(train: Split, samples: int | None) -> Split:
    """The first `samples` training examples (the split is already shuffled)."""
    if samples is None or samples >= len(train.y):
        return train
    return train.rows(slice(0, samples))
