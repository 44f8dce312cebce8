"""Datasets, splits, shards and the stable batch ids every soft target is keyed by.

Pure numpy: the train loop, the teacher trainer and the benchmarks all plan batches here, so
the same (epoch, shard, index) always names the same samples.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from students.config import DataConfig
from students.splits import Dataset, Split
from teachers import Batch


def load_dataset(cfg: DataConfig, *, in_worker: bool = False) -> Dataset:
    """Load the configured dataset: the user's files (`data.source`), or a bundled set split
    deterministically (stratified by class). `in_worker`: for a train worker, which reads a
    streamed source's training rows from its dataset shard instead. Every split has row ids."""
    dataset = _load(cfg, in_worker)
    keyed = lambda split: None if split is None else split.keyed()  # noqa: E731
    return replace(dataset, train=keyed(dataset.train), test=keyed(dataset.test),
                   teacher_train=keyed(dataset.teacher_train))


def _load(cfg: DataConfig, in_worker: bool) -> Dataset:
    if cfg.source is not None and cfg.source.columns.language_model:
        from students.lm_source import load_lm_source

        return load_lm_source(cfg)
    if cfg.source is not None:
        from students.file_data import load_source

        return load_source(cfg.source, streamed_students=in_worker and cfg.source.stream)
    if cfg.dataset == "stdlib_docstrings":
        return _load_text(cfg)
    if cfg.dataset == "stdlib_functions":
        return load_functions(cfg)
    if cfg.dataset == "digits_views":
        return load_digit_views(cfg)
    if cfg.dataset != "digits":
        raise ValueError(f"data.dataset: unknown dataset {cfg.dataset!r}; expected 'digits', 'digits_views' "
                         f"or 'stdlib_docstrings'")
    x, y = digit_images()
    train_idx, test_idx = stratified_split(y, cfg.test_fraction, cfg.split_seed)
    split = lambda rows: Split(x[rows], y[rows], digit_columns(y[rows]), ids=digit_ids(rows))  # noqa: E731
    return Dataset("digits", split(train_idx), split(test_idx), num_classes=int(y.max()) + 1)


def digit_ids(rows: np.ndarray) -> np.ndarray:
    """A digit's row id: its row in scikit-learn's set, whatever the split."""
    return np.char.add("digit-", np.asarray(rows).astype(str))


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float32 pixels in [0, 1] and int64 labels (ships inside
    scikit-learn: no download)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    return (raw.data / 16.0).astype(np.float32), raw.target.astype(np.int64)  # pixel counts are 0..16


def digit_columns(y: np.ndarray) -> dict[str, np.ndarray]:
    """Data columns of the digits: `task`, the split-digits task of the sample (0 for digits 0
    and 1, ..., 4 for 8 and 9), which `route` weighting and task sequences read."""
    return {"task": y // 2}


def load_digit_views(cfg: DataConfig):
    """The digits as pairs (teacher view, student view), split stratified by class."""
    from students.paired_data import digit_view, join_pairs, sensor_table

    pixels, labels = digit_images()
    pair_ids = np.arange(len(labels), dtype=np.int64)
    teacher_ids, teacher_values = sensor_table(pair_ids, digit_view(pixels, cfg.teacher_column), seed=1)
    student_ids, student_values = sensor_table(pair_ids, digit_view(pixels, cfg.student_column), seed=2)
    label_ids, label_values = sensor_table(pair_ids, labels, seed=3)
    t_rows, s_rows = join_pairs(teacher_ids, student_ids)
    paired, l_rows = join_pairs(teacher_ids[t_rows], label_ids)
    ids, y = teacher_ids[t_rows][paired], label_values[l_rows]
    x_teacher, x_student = teacher_values[t_rows][paired], student_values[s_rows][paired]
    same_view = cfg.teacher_column == cfg.student_column
    train_idx, test_idx = stratified_split(y, cfg.test_fraction, cfg.split_seed)

    def split(rows: np.ndarray) -> Split:
        return Split(x_student[rows], y[rows], {**digit_columns(y[rows]), "pair_id": ids[rows]},
                     None if same_view else x_teacher[rows], ids=np.char.add("pair-", ids[rows].astype(str)))

    return Dataset("digits_views", split(train_idx), split(test_idx), num_classes=int(y.max()) + 1)


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


def _load_text(cfg: DataConfig) -> Dataset:
    from students.text_data import token_windows
    from teachers import load_tokenizer, tokenizer_hash

    tokenizer = load_tokenizer(cfg.tokenizer)
    train, test = token_windows(tokenizer, cfg.sequence_length, cfg.train_windows, cfg.test_windows)
    train = train[np.random.default_rng(cfg.split_seed).permutation(len(train))]
    return Dataset("stdlib_docstrings", Split(train, np.zeros(len(train), np.int64)),
                   Split(test, np.zeros(len(test), np.int64)), num_classes=cfg.embedding_dim, kind="embedding",
                   tokenizer_hash=tokenizer_hash(tokenizer))


def load_functions(cfg: DataConfig) -> Dataset:
    """The standard library's functions as prompt (signature) / completion (docstring) token
    sequences for causal language models (students.lm_data)."""
    from students.lm_data import lm_splits
    from teachers import load_tokenizer, tokenizer_hash
    from teachers import specials_of

    tokenizer = load_tokenizer(cfg.tokenizer)
    specials = specials_of(tokenizer)
    train, test = lm_splits(tokenizer, cfg.sequence_length, cfg.train_windows, cfg.test_windows)
    train = train[np.random.default_rng(cfg.split_seed).permutation(len(train))]
    if cfg.generated:  # sequence-level KD: the teachers' completions of the prompts replace the training split
        from students.lm_data import generated_sequences

        train = generated_sequences(cfg.generated, cfg.sequence_length, specials.pad, int(tokenizer.eos_token_id))
    empty = lambda n: np.zeros(n, np.int64)  # noqa: E731 - the labels are the sequences' own next tokens
    return Dataset("stdlib_functions", Split(train, empty(len(train)), token_specials=specials),
                   Split(test, empty(len(test)), token_specials=specials), num_classes=len(tokenizer), kind="lm",
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
