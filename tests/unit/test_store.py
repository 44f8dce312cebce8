"""The offline store: keyed folders, manifests written last, stale stores refused, rows by sample."""

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from students.data import Split, plan_epoch
from teachers.arrow_codec import to_table
from teachers.errors import SoftTargetStoreError
from teachers.soft_targets import pack_soft_targets
from teachers.store import StoredTeachers, StoreKey, dataset_fingerprint, find_store, write_manifest
from teachers.teacher_set import TeacherEntry, TeacherSet

N, C, K = 40, 10, 4


def write_store(root, key, logits):
    folder = key.folder(root)
    folder.mkdir(parents=True)
    for part, rows in enumerate(np.array_split(np.arange(N), 3)):
        rec = pack_soft_targets(logits[rows], batch_id="", teacher=key.teacher, teacher_version=key.teacher_version,
                                temperature=key.temperature, output_space=f"classes:{C}", dense_max_classes=1,
                                top_k=key.top_k)
        pq.write_table(to_table(rec, sample=rows), folder / f"part-{part}.parquet")
    return write_manifest(folder, key, teacher_test_accuracy=0.9)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    x, logits = rng.random((N, 8), dtype=np.float32), rng.normal(size=(N, C)).astype(np.float32)
    key = StoreKey(dataset_fingerprint("toy", x, np.arange(N)), "mlp", "v1", K, 4.0)
    return tmp_path, key, write_store(tmp_path, key, logits), x, logits


def test_fingerprint_changes_with_the_data():
    x = np.zeros((4, 2), dtype=np.float32)
    assert dataset_fingerprint("d", x, np.arange(4)) == dataset_fingerprint("d", x.copy(), np.arange(4))
    assert dataset_fingerprint("d", x, np.arange(4)) != dataset_fingerprint("d", x, np.arange(4)[::-1])


def test_matching_store_is_found(store):
    root, key, manifest, *_ = store
    assert find_store(root, key) == manifest and manifest.rows == N and manifest.output_space == "classes:10"


@pytest.mark.parametrize("change, message", [
    (dict(teacher_version="v2"), "teacher_version 'v1' \\(needed 'v2'\\)"),
    (dict(temperature=2.0), "temperature 4.0 \\(needed 2.0\\)"),
    (dict(top_k=8), "top_k 4 \\(needed 8\\)"),
    (dict(dataset="0000"), "dataset"),
])
def test_stale_store_is_refused_naming_the_difference(store, change, message):
    root, key, *_ = store
    with pytest.raises(SoftTargetStoreError, match=message):
        find_store(root, replace(key, **change))


def test_unfinished_precompute_is_never_read(store):
    root, key, *_ = store
    (key.folder(root) / "manifest.json").unlink()
    with pytest.raises(SoftTargetStoreError, match="unfinished precompute"):
        find_store(root, key)


def test_tampered_manifest_is_refused(store):
    root, key, *_ = store
    path = key.folder(root) / "manifest.json"
    path.write_text(path.read_text().replace('"v1"', '"v0"'))
    with pytest.raises(SoftTargetStoreError, match="stale"):
        find_store(root, key)


def test_students_read_rows_by_sample(store):
    root, key, manifest, x, logits = store
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    stored = StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, samples=N, output_space="classes:10",
                            temperature=4.0)
    batch = plan_epoch(Split(x, np.zeros(N, dtype=np.int64)), epoch=3, seed=1, shard=1, num_shards=2, batch_size=8)[1]
    record = stored.targets_for(batch).records["mlp"]
    expected = pack_soft_targets(logits[batch.samples], batch_id=batch.batch_id, teacher="mlp", teacher_version="v1",
                                 temperature=4.0, output_space="classes:10", dense_max_classes=1, top_k=K)
    assert record.batch_id == batch.batch_id
    assert np.array_equal(record.topk_idx, expected.topk_idx)
    with pytest.raises(SoftTargetStoreError, match="lacks"):
        StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, samples=N + 5, output_space="classes:10",
                       temperature=4.0)
