"""Datasets, splits, shards and the stable batch ids every soft target is keyed by.

Pure numpy: the train loop, the teacher trainer and the benchmarks all plan batches here, so
the same (epoch, shard, index) always names the same samples.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from students.config import DataConfig
from students.splits import Dataset, Split
from teachers import Batch


def load_dataset(cfg: DataConfig, *, in_worker: bool = False, test: Optional[Split] = None,
                 progress: Optional[Callable[[str], None]] = None) -> Dataset:
    """Load the configured dataset: the user's files (`data.source`), or a bundled set split
    deterministically (stratified by class). `in_worker`: for a train worker, which reads a
    streamed source's training rows from its dataset shard instead, and its test split from
    `test` when the driver sends it (else from the files: rows held out of train take a pass
    over every train file). `progress` hears how the driver's scan of a streamed source goes.
    Every split has row ids."""
    dataset = _load(cfg, in_worker, test, progress)
    keyed = lambda split: None if split is None else split.keyed()  # noqa: E731
    return replace(dataset, train=keyed(dataset.train), test=keyed(dataset.test),
                   teacher_train=keyed(dataset.teacher_train))


def _load(cfg: DataConfig, in_worker: bool, test: Optional[Split], progress: Optional[Callable[[str], None]]
          ) -> Dataset:
    if cfg.source is not None and cfg.source.stream and not in_worker:
        from students.streamed_source import streamed_source_dataset

        return streamed_source_dataset(cfg, progress)
    if cfg.source is not None and cfg.source.columns.language_model:
        from students.lm_source import load_lm_source

        return load_lm_source(cfg, streamed_students=in_worker and cfg.source.stream, test=test)
    if cfg.source is not None:
        from students.file_data import load_source

        return load_source(cfg.source, streamed_students=in_worker and cfg.source.stream, test=test)
    if cfg.dataset == "stdlib_docstrings":
        return _load_text(cfg)
    from students.builtin_sources import builtin_dataset

    dataset = builtin_dataset(cfg)
    if dataset is None:
        raise ValueError(f"data.dataset: unknown dataset {cfg.dataset!r}; expected 'digits', 'digits_views', "
                         f"'stdlib_docstrings' or 'stdlib_functions'")
    return dataset


def _load_text(cfg: DataConfig) -> Dataset:
    from students.text_data import token_windows
    from teachers import load_tokenizer, tokenizer_hash

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


def batch_id(epoch: int, shard: int, index: int) -> str:
    return f"e{epoch}-s{shard}-b{index}"


def plan_epoch(split: Split, *, epoch: int, seed: int, shard: int, num_shards: int,
               batch_size: int) -> list[Batch]:
    """The batches of one shard for one epoch, in order; the same inputs give the same plan.

    Every shard gets the same number of batches (trailing samples that would make the shards
    uneven are dropped for that epoch), so data-parallel workers step in lockstep.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(split.y))
    per_shard = len(order) // num_shards
    mine = order[shard * per_shard:(shard + 1) * per_shard]
    n_batches = per_shard // batch_size
    rows = [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    return [Batch(batch_id(epoch, shard, i), epoch, i, split.x[r], split.labels(r), r, split.teacher_inputs[r],
                  {k: v[r] for k, v in split.columns.items()}, None if split.ids is None else split.ids[r])
            for i, r in enumerate(rows)]
