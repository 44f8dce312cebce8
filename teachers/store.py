"""The offline soft-target store: one teacher's top-k soft targets for a whole dataset split.

Layout: `<root>/<dataset fingerprint>/<teacher>-<teacher version>-k<k>-T<temperature>/` (`-s<k>-`
for sampled records; `-bfloat16` or `-float16` after it for a teacher run in half precision)
holds Parquet shards written with the Arrow codec (one row per sample, key column `row_id`, the
sample's stable row id) and a `manifest.json` written last that names them. The root is a local
folder or a URI on object storage (`s3://bucket/stores`): every node reads it. The fingerprint
covers the split's rows whatever their order (`students.Dataset.fingerprint`), and a batch finds
its rows by their ids, so a store serves any later order of the same rows, in memory or
streamed. A folder without a manifest is an unfinished precompute and is never read. The key
(dataset fingerprint, teacher, teacher version, kind, k, temperature, dtype) is in the folder name and
in the manifest; a run that needs another key gets a `SoftTargetStoreError`
saying which part differs, never a stale store.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from cluster import (exists, is_folder, join, list_files, read_parquet_footer, read_parquet_mapped, read_text,
                     write_text)
from teachers.arrow_codec import ROW_ID_COLUMN, SAMPLE_COLUMN, table_to_record
from ingest import BatchId
from teachers.errors import SoftTargetStoreError
from teachers.soft_targets import SCHEMA_VERSION, SoftTargets, gather_rows, shard_layout
from teachers.store_index import RowRuns, samples_by_id
from teachers.target_source import RecordSource
from teachers.targets import TeacherTargets
from teachers.teacher_set import TeacherSet

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StoreKey:
    dataset: str  # fingerprint
    teacher: str
    teacher_version: str
    top_k: int
    temperature: float
    kind: str = "topk"  # or "sampled": top_k draws per row (teachers.soft_targets)
    dtype: str = "float32"  # what the teacher ran in: half precision gives other targets

    def folder(self, root: str | Path) -> str:
        """The store's folder under `root` (a local path or a URI)."""
        cut = "s" if self.kind == "sampled" else "k"  # the top k, or k draws
        name = f"{self.teacher}-{self.teacher_version}-{cut}{self.top_k}-T{self.temperature:g}"
        return join(str(root), self.dataset, name if self.dtype == "float32" else f"{name}-{self.dtype}")


@dataclass(frozen=True)
class Manifest:
    key: StoreKey
    rows: int
    output_space: str
    num_classes: int
    files: list[str]
    schema_version: int = SCHEMA_VERSION
    teacher_test_score: Optional[float] = None  # test accuracy; held-out perplexity for language models
    created: float = 0.0

    def write(self, folder: str | Path) -> None:
        write_text(join(str(folder), MANIFEST), json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        data = json.loads(read_text(join(str(folder), MANIFEST)))
        if "teacher_test_accuracy" in data:  # stores written before language models
            data["teacher_test_score"] = data.pop("teacher_test_accuracy")
        return cls(**{**data, "key": StoreKey(**data["key"])})


def find_store(root: str | Path, key: StoreKey) -> Manifest:
    """The complete store for exactly `key`; otherwise a `SoftTargetStoreError` that names what differs."""
    folder = key.folder(root)
    if is_complete(folder):
        manifest = Manifest.read(folder)
        if manifest.key != key or manifest.schema_version != SCHEMA_VERSION:
            raise SoftTargetStoreError(
                f"store {folder} is stale: its manifest says {manifest.key} (schema v{manifest.schema_version}), "
                f"this run needs {key} (schema v{SCHEMA_VERSION}); rerun `distillery precompute`")
        return manifest
    others = [Manifest.read(join(str(root), found.rsplit("/", 1)[0])).key
              for found in list_files(str(root), MANIFEST, depth=2)
              if fnmatch.fnmatchcase(found, f"*/{key.teacher}-*/{MANIFEST}")]
    hint = "; ".join(_difference(other, key) for other in others) or "no store for this teacher exists"
    state = "an unfinished precompute" if is_folder(folder) else "nothing"
    raise SoftTargetStoreError(
        f"no soft-target store for teacher {key.teacher!r} at {folder} ({state} there). Stores found for "
        f"this teacher differ: {hint}. Run `distillery precompute <config>` with this run's config; a stale "
        f"store is never used in its place")


def _difference(other: StoreKey, wanted: StoreKey) -> str:
    parts = [f"{name} {getattr(other, name)!r} (needed {getattr(wanted, name)!r})"
             for name in ("dataset", "teacher_version", "kind", "top_k", "temperature", "dtype")
             if getattr(other, name) != getattr(wanted, name)]
    return ", ".join(parts) or "identical key"


def is_complete(folder: str | Path) -> bool:
    """Whether the store at `folder` is finished (its manifest is written)."""
    return exists(join(str(folder), MANIFEST))


def write_manifest(folder: str | Path, key: StoreKey, teacher_test_score: Optional[float],
                   shards: str = "") -> Manifest:
    """Check every shard of a finished precompute (in `folder`, or its subfolder `shards`: one
    attempt's) and write the manifest that makes them the store. Each shard's footer is read
    (its schema, record metadata and row count), not its data: a reader checks every value
    once per node, when it maps the shard (`StoredTargets`)."""
    folder = str(folder)
    files = [f"{shards}/{name}" if shards else name
             for name in list_files(join(folder, shards) if shards else folder, ".parquet")]
    if not files:
        raise SoftTargetStoreError(f"precompute wrote no Parquet shards into {join(folder, shards)}")
    rows, spaces = 0, set()
    for name in files:
        schema, num_rows = read_parquet_footer(join(folder, name))
        record = table_to_record(schema.empty_table(), source=f"store shard {join(folder, name)}", batch_id=BatchId(),
                                 check_values=False)
        if (record.teacher, record.teacher_version, record.kind) != (key.teacher, key.teacher_version, key.kind):
            raise SoftTargetStoreError(f"shard {name} holds {record.kind} records of teacher {record.teacher} "
                                       f"{record.teacher_version}, not {key}")
        rows += num_rows
        spaces.add((record.output_space, record.num_classes))
    if len(spaces) != 1:
        raise SoftTargetStoreError(f"shards in {folder} disagree on the output space: {sorted(spaces)}")
    (output_space, num_classes), = spaces
    manifest = Manifest(key, rows, output_space, num_classes, files, teacher_test_score=teacher_test_score,
                        created=time.time())
    manifest.write(folder)
    return manifest


class StoredTargets:
    """One teacher's stored records, memory-mapped shard by shard, sliced by sample.

    Each shard is read through this node's mapped copy (`cluster.read_parquet_mapped`; every
    value is checked once per node, when that copy is made): the targets stay in the page
    cache, shared by the node's workers, and a batch copies out only its own rows. What each
    process holds is the index: a row id per sample and the runs of each sample's consecutive
    rows (`store_index.RowRuns`: a few integers per sample). A classifier's store has one row
    per sample; a language model's has one row per target token, a sample's rows in position
    order (what a served teacher answers for that sample). A store keyed by row id numbers its
    samples by their ids' sorted order (`samples_of` finds them); a run's own replay store keys
    them by training row (`sample`).
    """

    def __init__(self, folder: str | Path, manifest: Manifest):
        self.name, self.folder = manifest.key.teacher, folder
        tables, self.shards = [], []
        for name in manifest.files:
            source = f"store {folder}, shard {name}"
            tables.append(read_parquet_mapped(join(str(folder), name),
                                              check=partial(table_to_record, source=source, batch_id=BatchId())))
            self.shards.append(table_to_record(tables[-1], source=source, batch_id=BatchId(), check_values=False))
        layouts = {shard_layout(shard) for shard in self.shards}
        if len(layouts) > 1:
            raise SoftTargetStoreError(f"shards in {folder} disagree on the record layout (kind, k, features): "
                                       f"{sorted(map(str, layouts))}; rerun `distillery precompute`")
        self.ids: Optional[np.ndarray] = None
        if tables and ROW_ID_COLUMN in tables[0].column_names:
            self.ids, self._runs = samples_by_id([table.column(ROW_ID_COLUMN) for table in tables])
        else:
            self._runs = RowRuns.build(table.column(SAMPLE_COLUMN).to_numpy() for table in tables)
        # a token sequence without target positions has no rows: its id finds an empty sample at the end
        self._empty_allowed = manifest.output_space.startswith("tokens:")

    def samples_of(self, ids: np.ndarray) -> np.ndarray:
        """The samples of row ids; a `SoftTargetStoreError` naming the ids the store lacks."""
        if self.ids is None:
            raise SoftTargetStoreError(f"store {self.folder} has no row ids (written before stores were keyed by "
                                       f"row id); rerun `distillery precompute`")
        ids = np.asarray(ids).astype(str)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        absent = self.ids[at] != ids
        if self._empty_allowed:
            return np.where(absent, len(self.ids), at)
        missing = ids[absent]
        if len(missing):
            raise SoftTargetStoreError(f"store {self.folder} lacks {len(missing)} of {len(ids)} rows (first ids: "
                                       f"{missing[:5].tolist()}); it was written for other rows: rerun `distillery "
                                       f"precompute` with this config")
        return at

    def held_samples(self) -> np.ndarray:
        """The sample ids with rows in the store, ascending."""
        return self._runs.held_samples()

    def rows_of(self, samples: np.ndarray) -> np.ndarray:
        """Record rows of `samples`, sample after sample; IndexError for a sample past the store."""
        return self._runs.rows_of(samples)

    def for_batch(self, batch_id: BatchId, samples: np.ndarray) -> SoftTargets:
        """The rows of `samples`, sample after sample, copied out of the shards."""
        return gather_rows(self.shards, self.rows_of(samples), batch_id)


class StoredTeachers(RecordSource):
    """The soft-target source over offline stores: no teacher runs while the student trains. A
    batch's rows are found by their row ids (`Batch.ids`); `row_ids`, the rows a phase will
    train on, are checked to be in every store before the first step."""

    def __init__(self, stores: dict[str, str], teacher_set: TeacherSet, *, output_space: str, temperature: float,
                 row_ids: Optional[np.ndarray] = None, target_kind: str = "topk"):
        super().__init__(teacher_set, output_space=output_space, temperature=temperature, target_kind=target_kind)
        self._stores = {}
        for name, folder in stores.items():
            self._stores[name] = StoredTargets(folder, Manifest.read(folder))
            if row_ids is not None:
                self._stores[name].samples_of(row_ids)

    def targets_for(self, batch) -> Optional[TeacherTargets]:
        records = {}
        for name, store in self._stores.items():
            try:
                samples = store.samples_of(batch.ids)
            except SoftTargetStoreError as exc:
                raise SoftTargetStoreError(f"teacher {name!r}, batch {batch.batch_id!r}: {exc}") from None
            records[name] = self.checked(store.for_batch(batch.batch_id, samples), batch,
                                         self.teacher_set.teachers[name].model_version)
        return self.merged(records)

    def close(self) -> None:
        self._stores.clear()
