"""The driver's view of a streamed source (`data.source.stream: true`): every split is checked
chunk by chunk and none is kept but the test split. The students read their split from the
Ray Data stream; the teachers' train split is read only in a process where a teacher trains on
it (`LazySplit`): teachers that come with weights, or from the cache, never read it, so a
corpus larger than any node's memory can be distilled.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ingest.config import DataConfig
from ingest.file_data import HeldOut, check_labels, check_test_classes, load_source, same_width, streamed_test_split
from ingest.file_scan import Progress
from ingest.split_scan import scan_split
from ingest.splits import Dataset, LazySplit, Split


def streamed_source_dataset(cfg: DataConfig, progress: Progress = None, on_cluster: bool = False) -> Dataset:
    """The test split, an empty training split of the students' shapes, the students' split
    scanned (`Dataset.streamed`) and the teachers' one scanned and read on demand; `progress`
    hears how the scans go (`ingest.split_scan`), run as Ray tasks when `on_cluster`."""
    if cfg.source.columns.language_model:
        return _language_model(cfg, progress, on_cluster)
    return _classification(cfg, progress, on_cluster)


def teachers_train_split(cfg: DataConfig) -> Split:
    """A streamed source's teachers' train split, read into memory as the in-memory path reads
    it (train less its held-out test rows)."""
    source = cfg.source.model_copy(update={"stream": False, "transfer": None})
    if source.columns.language_model:
        from ingest.lm_source import load_lm_source

        return load_lm_source(cfg.model_copy(update={"source": source})).train
    return load_source(source).train


def _classification(cfg: DataConfig, progress: Progress, on_cluster: bool) -> Dataset:
    source, notes = cfg.source, []
    class_names: tuple[str, ...] = ()
    if source.format == "images":
        from ingest.image_data import image_classes

        class_names = tuple(image_classes(source))
    given = source.num_classes or len(class_names) or None
    # an image folder reads only its held-out images for the test split: nothing to collect
    held = HeldOut(keep=source.format != "images") if source.test is None else None
    teachers = scan_split(source.train, source, given, notes=notes, held_out=held, progress=progress,
                          on_cluster=on_cluster)
    num_classes = given or len(teachers.class_counts)
    test = streamed_test_split(source, notes, held if held is not None and held.keep else None).keyed()
    same_width(source.test or source.train, test, teachers.template)
    check_labels(test, num_classes, source.test or source.train, test.ids)
    check_test_classes(test, set(np.flatnonzero(teachers.class_counts).tolist()), source.test or source.train)
    students = teachers
    if source.transfer is not None:
        students = scan_split(source.transfer, source, num_classes, teachers.template, notes, progress=progress,
                              on_cluster=on_cluster)
    return Dataset(f"source:{source.train}", students.template, test, num_classes,
                   teacher_rows=LazySplit(partial(teachers_train_split, cfg), teachers), streamed=students,
                   class_names=class_names, notes=tuple(notes))


def _language_model(cfg: DataConfig, progress: Progress, on_cluster: bool) -> Dataset:
    from ingest.lm_source import lm_test_view, scan_lm_split

    source, notes = cfg.source, []
    rows = HeldOut() if source.test is None else None
    teachers = scan_lm_split(source.train, cfg, notes, held_out=rows, progress=progress, on_cluster=on_cluster)
    students = teachers if source.transfer is None else scan_lm_split(source.transfer, cfg, notes, progress=progress,
                                                                             on_cluster=on_cluster)
    held = lm_test_view(cfg, notes, held=rows)
    return Dataset(held.name, students.template, held.test.keyed(), held.num_classes, kind="lm",
                   tokenizer_hash=held.tokenizer_hash,
                   teacher_rows=LazySplit(partial(teachers_train_split, cfg), teachers),
                   streamed=students, notes=tuple(notes))
