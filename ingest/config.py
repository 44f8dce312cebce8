"""The `data:` section of a run config: a bundled dataset or the user's own files
(`data.source`), with the tokenizer and sequence length of language-model and text data."""

from __future__ import annotations

import os
from typing import Literal, Optional

from pydantic import Field, PrivateAttr, field_validator, model_validator

from cluster import Strict


class SourceColumns(Strict):
    """The file's column for each role. Classification rows: `input` (and `teacher_input`) is
    one column holding a fixed-length numeric list per row, or a list of numeric columns (one
    feature each), and `label` the class. Language-model rows: `prompt` and `completion` text,
    or `messages` (chat turns rendered with the tokenizer's chat template; the last turn, the
    assistant's, is the completion), or `text` (plain text, all of it the completion)."""

    input: Optional[str | list[str]] = Field(None, description="what the students read")
    label: Optional[str] = Field(None, description="the integer class of each row (0 .. classes - 1)")
    id: Optional[str] = Field(None, description="a stable row id; default: the file's name and the row's number")
    task: Optional[str] = Field(None, description="an integer task of each row (continual tasks, route weighting)")
    teacher_input: Optional[str | list[str]] = Field(
        None, description="cross-modal pairs: what the teachers read (default: input)")
    prompt: Optional[str] = Field(None, description="language models: the prompt text of each row")
    completion: Optional[str] = Field(None, description="language models: the completion the loss covers")
    messages: Optional[str] = Field(
        None, description="language models: a list of {role, content} chat turns per row, the last the assistant's")
    text: Optional[str] = Field(None, description="language models: plain text the loss covers whole (no prompt)")

    @model_validator(mode="after")
    def _one_kind_of_row(self) -> "SourceColumns":
        features = self.input is not None or self.label is not None
        text = self.prompt is not None or self.completion is not None
        if sum((features, text, self.messages is not None, self.text is not None)) != 1:
            raise ValueError("columns: give input and label (classification), or prompt and completion, messages "
                             "or text (language models), one kind only")
        if features and (self.input is None or self.label is None):
            raise ValueError("columns: classification rows need both input and label")
        if text and (self.prompt is None or self.completion is None):
            raise ValueError("columns: language-model rows need both prompt and completion (or give messages)")
        if not features and (self.task or self.teacher_input):
            raise ValueError("columns.task/teacher_input: these roles belong to classification rows")
        return self

    @property
    def language_model(self) -> bool:
        return self.input is None


class ImageConfig(Strict):
    """How an image source's files become inputs: decoded, converted to `channels` (1: grey,
    3: RGB), resized to `size`, scaled to [0, 1], then `(x - mean) / std` per channel, and
    flattened channel-first (models read [B, channels * height * width])."""

    size: int | tuple[int, int] = Field(32, description="the side of a square, or [height, width]")
    channels: Literal[1, 3] = 3
    mean: list[float] = Field([0.0], description="one value, or one per channel")
    std: list[float] = Field([1.0], description="one value, or one per channel")

    @model_validator(mode="after")
    def _per_channel(self) -> "ImageConfig":
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ValueError(f"image.{name}: give one value or {self.channels} (one per channel)")
        if any(v <= 0 for v in self.std):
            raise ValueError("image.std: every value must be positive")
        if min(self.shape) < 1:
            raise ValueError("image.size: at least one pixel a side")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)


class SourceConfig(Strict):
    """The user's own data, read from files: `train` (teachers and, without `transfer`,
    students), `test` or a `test_fraction` of train decided by a hash of each row's id, and
    optionally `transfer`, the students' own split (Hinton's transfer set)."""

    format: Literal["parquet", "jsonl", "csv", "images", "text", "hf_dataset"]
    train: str = Field(description="a path, a glob, or a URI pyarrow can open (s3://...); images: a folder "
                                   "with one sub-folder per class; hf_dataset: a split's save_to_disk folder")
    test: Optional[str] = Field(None, description="the test split's files; omitted: test_fraction of train")
    test_fraction: Optional[float] = Field(None, gt=0, lt=1, description="share of train held out by row id hash")
    transfer: Optional[str] = Field(None, description="the students' training files (default: train)")
    columns: Optional[SourceColumns] = Field(
        None, description="the files' column for each role; images: image (decoded), label (class folder), id (path)")
    image: ImageConfig = Field(default_factory=ImageConfig, description="images (a folder, or a column of image "
                                                                        "file bytes): decoding and normalisation")
    classes: Optional[list[str]] = Field(None, description="images: the class folders in label order; default: "
                                                           "the train folder's sub-folders by name")
    num_classes: Optional[int] = Field(None, ge=2, description="the output space; default: the largest label + 1")
    stream: bool = Field(False, description="students read the transfer split as a Ray Data stream "
                                            "(`ray.train.get_dataset_shard`) instead of holding it in memory")
    shuffle_buffer_rows: int = Field(4096, ge=1, description="stream: rows each worker reads and shuffles at a time")
    read_cpus: float = Field(0.25, gt=0, description="stream: CPUs each Ray Data read task reserves")
    scan_cpus: float = Field(1.0, gt=0, description="stream: CPUs each Ray task of the split's check reserves (a "
                                                    "task a file; a driver connected to a cluster)")
    scan_workers: Optional[int] = Field(
        None, ge=1, description="stream, a check without Ray (distillery check): processes it runs in; default: one "
                                "per CPU core (at most one per file) when the files left to check hold over 256 MiB, "
                                "else 1")
    _text: tuple[Optional[str], int] = PrivateAttr((None, 32))  # data.tokenizer, data.sequence_length (text inputs)

    @property
    def text_tokenizer(self) -> tuple[Optional[str], int]:
        """The run's tokenizer and sequence length, for an input column of text."""
        return self._text

    @field_validator("train", "test", "transfer")
    @classmethod
    def _absolute(cls, value: Optional[str]) -> Optional[str]:
        """Local paths are made absolute where the config is read (the driver): train workers
        run in folders of their own."""
        if value is None or "://" in value:
            return value
        return os.path.abspath(os.path.expanduser(value))

    @model_validator(mode="after")
    def _one_test_split(self) -> "SourceConfig":
        if self.format == "images":
            fixed = SourceColumns(input="image", label="label", id="id")
            if self.columns is not None and self.columns != fixed:
                raise ValueError("columns: an image folder's columns are fixed (image, label from the class folder, "
                                 "id from the path); leave columns out")
            self.columns = fixed
        elif self.format == "text":
            fixed = SourceColumns(text="text")
            if self.columns is not None and self.columns != fixed:
                raise ValueError("columns: a text source's rows are its files' lines (column text, id file:line); "
                                 "leave columns out")
            self.columns = fixed
        elif self.columns is None:
            raise ValueError(f"columns: a {self.format} source needs the column of each role (input and label, "
                             f"prompt and completion, or messages)")
        elif self.classes is not None:
            raise ValueError("classes: names the class folders of an image source; a file's labels are integers")
        if self.test is not None and self.test_fraction is not None:
            raise ValueError("test/test_fraction: give the test files or a fraction of train, not both")
        if self.test is None and self.test_fraction is None:
            raise ValueError("test: give the test files, or test_fraction (a share of train held out by row id)")
        # a text line's id is its file and line, a saved dataset's its row's number in the split (the read tasks
        # know both); a file of rows has no such number in a stream, which cuts its files into blocks
        if self.stream and self.columns.id is None and self.format in ("parquet", "jsonl", "csv"):
            raise ValueError("columns.id: a streamed source needs a stable row id column (a stream has no row "
                             "numbers to make ids from); name one, or set stream: false")
        return self


class DataConfig(Strict):
    """source: the user's own files (`SourceConfig`, `ingest.file_data`). digits:
    scikit-learn's 8x8 digits (classification). digits_views: the same digits as cross-modal
    pairs of sensor views (ingest/paired_data.py). stdlib_docstrings: windows of tokens from
    the docstrings of Python's standard library (sentence-embedding distillation).
    stdlib_functions: the standard library's functions as prompt (signature) and completion
    (docstring) token sequences for causal language models (ingest/lm_data.py)."""

    dataset: Literal["digits", "digits_views", "stdlib_docstrings", "stdlib_functions"] = "digits"
    teacher_column: Optional[Literal["image", "profile", "lowres"]] = Field(
        None, description="digits_views: the view the teachers read")
    student_column: Optional[Literal["image", "profile", "lowres"]] = Field(
        None, description="digits_views: the view the students read")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="digits: share of the test split")
    split_seed: int = 0
    student_train_samples: Optional[int] = Field(
        None, ge=10, description="labelled samples the students see (the transfer set); all if omitted"
    )
    tokenizer: Optional[str] = Field(
        None, description="text: the tokenizer's model folder, pkg:<package>/<folder> or hub id")
    sequence_length: int = Field(32, ge=8, le=8192, description="text: tokens per window or sequence")
    length_buckets: int = Field(0, ge=0, description="language models: each batch's rows of similar lengths, "
                                                     "sorted within windows of this many shuffled batches, so the "
                                                     "padding after a batch's longest sequence is not computed; "
                                                     "0 or 1: off")
    train_windows: int = Field(2048, ge=16, description="text: training windows (stdlib_functions: sequences)")
    test_windows: int = Field(256, ge=16, description="text: held-out windows (stdlib_functions: sequences)")
    embedding_dim: int = Field(384, ge=1, description="text: width of the sentence embeddings")
    generated: Optional[str] = Field(
        None, description="stdlib_functions: a Parquet folder written by `distillery generate`; the students "
                          "train on its teacher-written completions instead of the training split")
    source: Optional[SourceConfig] = Field(None, description="your own data, from files (instead of `dataset`)")

    @model_validator(mode="after")
    def _dataset_fields(self) -> "DataConfig":
        if self.length_buckets > 1 and not self.language_model:
            raise ValueError("length_buckets: only language-model rows have lengths to bucket by; drop it")
        if self.length_buckets > 1 and self.source is not None and self.source.stream:
            raise ValueError("length_buckets: a streamed source's batches come in stream order; set "
                             "data.source.stream: false to bucket them, or drop length_buckets")
        if self.source is not None:
            self.source._text = (self.tokenizer, self.sequence_length)
            bundled = ("dataset", "teacher_column", "student_column", "train_windows", "test_windows",
                       "test_fraction") + (() if self.source.columns.language_model else ("generated",))
            given = sorted(k for k in bundled if getattr(self, k) != type(self).model_fields[k].default)
            if given:
                raise ValueError(f"{', '.join(given)}: a run with data.source reads its own files; these keys "
                                 f"belong to the bundled datasets (give the split in data.source)")
            if self.source.columns.language_model and not self.tokenizer:
                raise ValueError("tokenizer: a language-model source needs data.tokenizer (the teachers' and the "
                                 "students' tokenizer folder, pkg:<package>/<folder> or hub id)")
            if self.source.stream and self.generated:
                raise ValueError("data.generated: the teachers' completions replace the students' split in memory; "
                                 "set data.source.stream: false to train on them")
            return self
        if self.dataset in TEXT_DATASETS and not self.tokenizer:
            raise ValueError(f"tokenizer: {self.dataset} needs data.tokenizer (the teacher's model folder; for "
                             f"stdlib_functions the shipped pkg:ingest/tokenizers/stdlib-bpe-1024 works)")
        views = (self.teacher_column, self.student_column)
        if self.dataset == "digits_views" and None in views:
            raise ValueError("digits_views needs data.teacher_column and data.student_column (image, profile or "
                             "lowres): the view each side reads")
        if self.dataset != "digits_views" and views != (None, None):
            raise ValueError(f"teacher_column/student_column: only the paired dataset digits_views has views; "
                             f"{self.dataset} has one input")
        return self

    @property
    def described(self) -> str:
        """The data as a config error names it."""
        return f"data.source ({self.source.format} files)" if self.source is not None else f"data.dataset {self.dataset}"

    @property
    def classification(self) -> bool:
        """Rows of features with a class each: the digits, their views, or a user's files of them."""
        if self.source is not None:
            return not self.source.columns.language_model
        return self.dataset in ("digits", "digits_views")

    @property
    def language_model(self) -> bool:
        """Token sequences for causal language models: stdlib_functions or a prompt/completion source."""
        if self.source is not None:
            return self.source.columns.language_model
        return self.dataset == "stdlib_functions"

    @property
    def columns(self) -> set[str]:
        """The per-sample data columns the splits carry (task sequences and route weighting read them)."""
        if self.source is not None:
            return {"task"} if self.source.columns.task else set()
        return {"task"} if self.dataset in ("digits", "digits_views") else set()

    @property
    def cross_modal(self) -> bool:
        """The teachers read another input than the students."""
        if self.source is not None:
            return self.source.columns.teacher_input is not None
        return self.dataset == "digits_views" and self.teacher_column != self.student_column


TEXT_DATASETS = ("stdlib_docstrings", "stdlib_functions")
