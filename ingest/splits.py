"""A dataset's splits as the students and teachers read them (plain numpy).

`ingest.loading` loads the bundled sets and plans batches; `ingest.file_data` reads a user's
files; both return a `Dataset`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from ingest.row_hash import row_hashes, rows_fingerprint


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 [N, F] features, or int64 [N, L] token ids: what the student reads
    y: np.ndarray  # int64 [N] labels (zeros for text, which has none)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample data columns (e.g. "task")
    teacher_x: Optional[np.ndarray] = None  # cross-modal pairs: the teachers' modality of the same samples
    token_sequences: bool = False  # packed token sequences (`ingest.token_layout`): labels are the next tokens
    ids: Optional[np.ndarray] = None  # str [N] stable row ids: the offline store's key (`keyed` fills them in)

    def labels(self, index) -> np.ndarray:
        """The labels of the samples at `index`: `y`, or for token sequences the next token at
        every target position (one per record row, `ingest.token_layout`)."""
        if not self.token_sequences:
            return self.y[index]
        from ingest.token_layout import target_labels

        return target_labels(self.x[index])

    @property
    def teacher_inputs(self) -> np.ndarray:
        return self.x if self.teacher_x is None else self.teacher_x

    def rows(self, index) -> "Split":
        """The samples at `index` (a slice or an index array), every column alike."""
        return Split(self.x[index], self.y[index], {k: v[index] for k, v in self.columns.items()},
                     None if self.teacher_x is None else self.teacher_x[index], self.token_sequences,
                     None if self.ids is None else self.ids[index])

    def fingerprint(self, output_space: str) -> str:
        """The split's rows as seen by the teachers (their inputs, the labels, the row ids),
        whatever their order (`rows_fingerprint`)."""
        return rows_fingerprint(output_space, row_hashes(self.keyed().ids, self.teacher_inputs, self.y))

    def keyed(self) -> "Split":
        """The split with row ids: its own, or its rows' positions as loaded (a bundled set's
        split is the same for the same config)."""
        return self if self.ids is not None else replace(self, ids=np.arange(len(self.y)).astype(str))


@dataclass(frozen=True)
class StreamedSplit:
    """The students' split of a streamed source as the driver checked it, row by row, without
    holding it: its size and rows per class."""

    rows: int
    class_counts: np.ndarray
    fingerprint: str  # of its rows whatever their order (`rows_fingerprint`): the offline store's key
    target_tokens: int = 0  # token sequences: the positions the loss covers
    template: Optional[Split] = None  # no rows, with the split's shapes, dtypes and columns


@dataclass(frozen=True)
class LazySplit:
    """A split read only where it is used: a streamed source's teachers' train split, which a
    process reads when a teacher trains on it. Everything else (its size, classes and
    fingerprint, for checks and the teacher cache's key) comes from the driver's scan."""

    read: Callable[[], Split]  # picklable (a module-level function and its config): teachers train in tasks
    scan: StreamedSplit
    teachers_view: bool = False  # cross-modal pairs: the teachers' modality as x

    def load(self) -> Split:
        split = self.read().keyed()
        return teacher_view(split) if self.teachers_view else split


def teacher_view(split: Split) -> Split:
    """The split as the teachers read it: their modality as `x`."""
    return Split(split.teacher_x, split.y, split.columns, ids=split.ids)


@dataclass(frozen=True)
class Dataset:
    """`kind` "classification": models map x to logits over `num_classes` classes;
    "embedding": models map token windows to sentence embeddings of width `num_classes`;
    "lm": causal language models map token sequences to next-token logits over a vocabulary
    of `num_classes` tokens, one row per target position."""

    name: str
    train: Split
    test: Split
    num_classes: int
    kind: str = "classification"
    tokenizer_hash: str = ""
    teacher_train: Optional[Split] = None  # the teachers' training split when the students have their own
    teacher_rows: Optional[LazySplit] = None  # a streamed source's teachers' training split, read where it is used
    streamed: Optional[StreamedSplit] = None  # a streamed source: the students' split, read by the workers
    class_names: tuple[str, ...] = ()  # an image folder's classes, in label order
    notes: tuple[str, ...] = ()  # what loading changed that a user should know (texts cut to the length)

    @property
    def teachers_train(self) -> Split:
        """What the teachers train on: `train` (the students' split) unless the data has its own."""
        if self.teacher_train is not None:
            return self.teacher_train
        return self.teacher_rows.load() if self.teacher_rows is not None else self.train

    @property
    def teachers_fingerprint(self) -> str:
        """The fingerprint of the teachers' training rows (`Split.fingerprint`), from the scan of
        a split the driver did not keep."""
        if self.teacher_rows is not None:
            return self.teacher_rows.scan.fingerprint
        return self.teachers_train.fingerprint(self.output_space)

    @property
    def in_features(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def output_space(self) -> str:
        if self.kind == "lm":
            return f"tokens:{self.num_classes}:{self.tokenizer_hash}"
        return f"{'embedding' if self.kind == 'embedding' else 'classes'}:{self.num_classes}"

    @property
    def cross_modal(self) -> bool:
        return self.train.teacher_x is not None

    def teacher_view(self) -> "Dataset":
        """The dataset as the teachers read it: their modality as `x` (itself when not cross-modal)."""
        if not self.cross_modal:
            return self
        return replace(self, train=teacher_view(self.train), test=teacher_view(self.test),
                       teacher_train=None if self.teacher_train is None else teacher_view(self.teacher_train),
                       teacher_rows=None if self.teacher_rows is None else replace(self.teacher_rows,
                                                                                   teachers_view=True))

    @property
    def fingerprint(self) -> str:
        """The students' rows as the offline store keys them, whatever their order: the
        teachers' inputs, labels and row ids of the split (`rows_fingerprint`)."""
        if self.streamed is not None:
            return self.streamed.fingerprint
        return self.train.fingerprint(self.output_space)
