"""The offline store: keyed folders, manifests written last, stale stores refused, rows by row id."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster import drop_other_attempts, join, write_parquet
from ingest.batches import plan_epoch
from ingest.loading import Split
from ingest.row_hash import row_hashes, rows_fingerprint
from teachers.arrow_codec import to_table
from teachers.errors import SoftTargetError, SoftTargetStoreError
from teachers.soft_targets import pack_soft_targets
from teachers.store import StoreKey, StoredTeachers, find_store, write_manifest
from teachers.teacher_set import TeacherEntry, TeacherSet

pytestmark = pytest.mark.usefixtures("own_cache")
N, C, K = 40, 10, 4
IDS = np.array([f"row-{i}" for i in range(N)])


def write_store(root, key, logits, shards=""):
    """A store of `key` under `root` (a folder or a URI), its shards in the subfolder `shards`."""
    folder = key.folder(root)
    for part, rows in enumerate(np.array_split(np.arange(N), 3)):
        rec = pack_soft_targets(logits[rows], batch_id=f"part-{part}", teacher=key.teacher,
                                teacher_version=key.teacher_version, temperature=key.temperature,
                                output_space=f"classes:{C}", dense_max_classes=1, top_k=key.top_k, target_kind=key.kind)
        write_parquet(to_table(rec, sample=rows, row_ids=IDS[rows]), join(folder, shards, f"part-{part}.parquet"))
    return write_manifest(folder, key, teacher_test_score=0.9, shards=shards)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    x, logits = rng.random((N, 8), dtype=np.float32), rng.normal(size=(N, C)).astype(np.float32)
    key = StoreKey(rows_fingerprint("classes:10", row_hashes(IDS, x, np.arange(N) % C)), "mlp", "v1", K, 4.0)
    return tmp_path, key, write_store(tmp_path, key, logits), x, logits


def test_fingerprint_is_the_rows_whatever_their_order_and_changes_with_the_data():
    x, y, ids = np.arange(8, dtype=np.float32).reshape(4, 2), np.arange(4), np.array(["a", "b", "c", "d"])
    fingerprint = lambda order: rows_fingerprint("classes:4", row_hashes(ids[order], x[order], y[order]))  # noqa: E731
    assert fingerprint([0, 1, 2, 3]) == fingerprint([3, 1, 0, 2])
    in_chunks = np.concatenate([row_hashes(ids[:1], x[:1], y[:1]), row_hashes(ids[1:], x[1:], y[1:])])
    assert rows_fingerprint("classes:4", in_chunks) == fingerprint([0, 1, 2, 3])
    assert fingerprint([0, 1, 2]) != fingerprint([0, 1, 2, 3])
    assert rows_fingerprint("classes:4", row_hashes(ids, x, y[::-1])) != fingerprint([0, 1, 2, 3])
    assert rows_fingerprint("classes:4", row_hashes(ids[::-1], x, y)) != fingerprint([0, 1, 2, 3])


def test_matching_store_is_found(store):
    root, key, manifest, *_ = store
    assert find_store(root, key) == manifest and manifest.rows == N and manifest.output_space == "classes:10"


@pytest.mark.parametrize("change, message", [
    (dict(teacher_version="v2"), "teacher_version 'v1' \\(needed 'v2'\\)"),
    (dict(temperature=2.0), "temperature 4.0 \\(needed 2.0\\)"),
    (dict(top_k=8), "top_k 4 \\(needed 8\\)"),
    (dict(kind="sampled"), "kind 'topk' \\(needed 'sampled'\\)"),
    (dict(dataset="0000"), "dataset"),
    (dict(dtype="bfloat16"), "dtype 'float32' \\(needed 'bfloat16'\\)"),
])
def test_stale_store_is_refused_naming_the_difference(store, change, message):
    root, key, *_ = store
    with pytest.raises(SoftTargetStoreError, match=message):
        find_store(root, replace(key, **change))


def test_unfinished_precompute_is_never_read(store):
    root, key, *_ = store
    (Path(key.folder(root)) / "manifest.json").unlink()
    with pytest.raises(SoftTargetStoreError, match="unfinished precompute"):
        find_store(root, key)


def test_tampered_manifest_is_refused(store):
    root, key, *_ = store
    path = Path(key.folder(root)) / "manifest.json"
    path.write_text(path.read_text().replace('"v1"', '"v0"'))
    with pytest.raises(SoftTargetStoreError, match="stale"):
        find_store(root, key)


def test_students_read_rows_by_id_in_any_order_of_the_split(store):
    root, key, manifest, x, logits = store
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    shuffled = np.random.default_rng(3).permutation(N)  # the same rows in another order than at precompute
    split = Split(x[shuffled], np.zeros(N, dtype=np.int64), ids=IDS[shuffled])
    stored = StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, output_space="classes:10",
                            temperature=4.0, row_ids=split.ids)
    batch = plan_epoch(split, epoch=3, seed=1, shard=1, num_shards=2, batch_size=8)[1]
    record = stored.targets_for(batch).records["mlp"]
    expected = pack_soft_targets(logits[shuffled[batch.samples]], batch_id=batch.batch_id, teacher="mlp",
                                 teacher_version="v1", temperature=4.0, output_space="classes:10",
                                 dense_max_classes=1, top_k=K)
    assert record.batch_id == batch.batch_id
    assert np.array_equal(record.topk_idx, expected.topk_idx)
    with pytest.raises(SoftTargetStoreError, match=r"lacks 1 of 41 rows \(first ids: \['new-row'\]\)"):
        StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, output_space="classes:10", temperature=4.0,
                       row_ids=np.append(IDS, "new-row"))
    with pytest.raises(SoftTargetStoreError, match="batch 'b': .*lacks"):
        stored.targets_for(replace(batch, batch_id="b", ids=np.array(["row-1", "other"])))


def test_the_targets_are_mapped_from_one_copy_per_node_and_each_batch_copies_its_rows(store, own_cache):
    """Every shard is mapped read-only from the node's copy (no copy of the targets in the
    worker's memory); a second reader maps the same copies; a batch gets its own rows."""
    root, key, manifest, x, logits = store
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    stored = StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, output_space="classes:10", temperature=4.0)
    shards = stored._stores["mlp"].shards
    assert len(shards) == 3
    for shard in shards:
        for array in (shard.topk_idx, shard.topk_logprob, shard.tail_logprob):
            assert not array.flags.writeable and not array.flags.owndata
    copies = sorted((own_cache / "mapped").glob("*.arrow"))
    assert len(copies) == 3
    StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, output_space="classes:10", temperature=4.0)
    assert sorted((own_cache / "mapped").glob("*.arrow")) == copies
    split = Split(x, np.zeros(N, dtype=np.int64), ids=IDS)
    batch = plan_epoch(split, epoch=0, seed=1, shard=0, num_shards=1, batch_size=16)[0]
    record = stored.targets_for(batch).records["mlp"]
    assert record.topk_idx.flags.writeable and record.topk_idx.flags.owndata


def test_a_store_of_sampled_targets_has_its_own_key_and_serves_a_sampled_run_only(store):
    root, key, _, x, logits = store
    sampled = replace(key, kind="sampled")
    assert Path(sampled.folder(root)).name == "mlp-v1-s4-T4" and Path(key.folder(root)).name == "mlp-v1-k4-T4"
    assert Path(replace(key, dtype="bfloat16").folder(root)).name == "mlp-v1-k4-T4-bfloat16"
    write_store(root, sampled, logits)
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    split = Split(x, np.zeros(N, dtype=np.int64), ids=IDS)
    batch = plan_epoch(split, epoch=0, seed=1, shard=0, num_shards=1, batch_size=8)[0]
    stored = StoredTeachers({"mlp": str(sampled.folder(root))}, teacher_set, output_space="classes:10",
                            temperature=4.0, row_ids=IDS, target_kind="sampled")
    record = stored.targets_for(batch).records["mlp"]
    assert record.kind == "sampled" and record.topk_idx.shape == (8, K)
    with pytest.raises(SoftTargetError, match="sent sampled targets where topk were asked"):
        StoredTeachers({"mlp": str(sampled.folder(root))}, teacher_set, output_space="classes:10",
                       temperature=4.0, row_ids=IDS).targets_for(batch)
    with pytest.raises(SoftTargetStoreError, match="holds topk records of teacher mlp v1, not"):
        write_manifest(key.folder(root), sampled, None)


def test_a_language_models_store_gives_each_samples_token_rows_in_order(tmp_path):
    """One row per target token: the rows of a batch are its samples' rows, sample after sample,
    whatever order the shards hold them in; a sequence with no target position has none."""
    import torch

    from ingest.token_layout import CONTEXT, PAD, ROLE_SHIFT, TARGET, target_labels, targets_per_sequence

    vocab = 16
    rng = np.random.default_rng(0)
    roles = np.full((N, 12), TARGET)
    roles[:, :4] = CONTEXT  # a 4-token prompt
    for row, end in enumerate(rng.integers(5, 13, size=N)):  # ragged completions
        roles[row, end - 1:] = PAD
    roles[7, 4:] = PAD  # a prompt without completion: no rows
    ids = np.where(roles == PAD, 0, rng.integers(2, vocab, size=(N, 12)) | (roles << ROLE_SHIFT))
    per_sample = targets_per_sequence(torch.as_tensor(ids)).numpy()
    assert per_sample[7] == 0
    logits = rng.normal(size=(int(per_sample.sum()), vocab)).astype(np.float32)
    sample_of_row = np.repeat(np.arange(N), per_sample)
    space = f"tokens:{vocab}:abc"
    key = StoreKey("d", "gpt", "v1", K, 1.0)
    folder = Path(key.folder(tmp_path))
    folder.mkdir(parents=True)
    for part, samples in enumerate([np.arange(20, N), np.arange(0, 20)]):  # shards out of sample order
        rows = np.flatnonzero(np.isin(sample_of_row, samples))
        rec = pack_soft_targets(logits[rows], batch_id="", teacher="gpt", teacher_version="v1", temperature=1.0,
                                output_space=space, dense_max_classes=1, top_k=K)
        pq.write_table(to_table(rec, sample=sample_of_row[rows], row_ids=IDS[sample_of_row[rows]]),
                       folder / f"part-{part}.parquet")
    write_manifest(folder, key, teacher_test_score=90.0)

    teacher_set = TeacherSet(1, {"gpt": TeacherEntry("gpt", 1.0, space, vocab, "v1")})
    stored = StoredTeachers({"gpt": str(folder)}, teacher_set, output_space=space, temperature=1.0)
    split = Split(ids, np.zeros(N, dtype=np.int64), token_sequences=True, ids=IDS)
    batch = next(b for b in plan_epoch(split, epoch=0, seed=2, shard=0, num_shards=1, batch_size=8)
                 if 7 in b.samples)
    batch = replace(batch, y=target_labels(ids[batch.samples]))
    assert len(batch.y) == per_sample[batch.samples].sum()
    record = stored.targets_for(batch).records["gpt"]
    expected = pack_soft_targets(logits[np.concatenate([np.flatnonzero(sample_of_row == s) for s in batch.samples])],
                                 batch_id=batch.batch_id, teacher="gpt", teacher_version="v1", temperature=1.0,
                                 output_space=space, dense_max_classes=1, top_k=K)
    assert np.array_equal(record.topk_idx, expected.topk_idx)
    assert np.allclose(record.tail_logprob, expected.tail_logprob)


def test_a_streamed_batch_finds_its_rows_by_id(store):
    """A stream's batch has no row positions (samples are -1): its ids alone key the store."""
    from ingest.streamed import stream_batch

    root, key, manifest, x, logits = store
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    stored = StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, output_space="classes:10", temperature=4.0)
    rows = np.array([31, 2, 17])
    batch = stream_batch(0, 0, {"id": IDS[rows].astype(object), "x": x[rows], "y": np.zeros(3, np.int64)})
    assert (batch.samples == -1).all()
    expected = pack_soft_targets(logits[rows], batch_id="", teacher="mlp", teacher_version="v1", temperature=4.0,
                                 output_space="classes:10", dense_max_classes=1, top_k=K)
    assert np.array_equal(stored.targets_for(batch).records["mlp"].topk_idx, expected.topk_idx)


def test_the_precompute_scorer_writes_sampled_records_seeded_by_each_blocks_rows(tmp_path):
    """`distillery precompute`'s Ray Data callable, called on two blocks as Ray Data would: with
    target_kind sampled it writes k draws per row, reproducibly, and the store reads them back."""
    from orchestration.precompute import INPUTS, ROW_ID, StoreScorer
    from teachers.arrow_codec import fixed_size_list, table_to_record
    from tests.unit.teacher_fixtures import IN_FEATURES, teacher_args

    args = teacher_args(tmp_path)
    x = np.random.default_rng(0).random((N, IN_FEATURES), dtype=np.float32)

    def block(rows):
        return pa.table({"sample": pa.array(rows.astype(np.int64)), ROW_ID: pa.array(IDS[rows]),
                         INPUTS: fixed_size_list(x[rows], pa.float32())})

    scorer = StoreScorer(args, top_k=6, target_kind="sampled")
    first, second = block(np.arange(20)), block(np.arange(20, N))
    tables = [scorer(first), scorer(second)]
    records = [table_to_record(t, source="scored block", batch_id="") for t in tables]
    assert all(r.kind == "sampled" and r.topk_idx.shape == (20, 6) for r in records)
    np.testing.assert_array_equal(table_to_record(scorer(first), source="again", batch_id="").topk_idx,
                                  records[0].topk_idx)
    version = records[0].teacher_version
    key = StoreKey("d", "mlp", version, 6, 4.0, kind="sampled")
    folder = Path(key.folder(tmp_path))
    folder.mkdir(parents=True)
    for i, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{i}.parquet")
    assert write_manifest(folder, key, None).rows == N
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, version)})
    split = Split(x, np.zeros(N, dtype=np.int64), ids=IDS)
    batch = plan_epoch(split, epoch=0, seed=0, shard=0, num_shards=1, batch_size=8)[0]
    stored = StoredTeachers({"mlp": str(folder)}, teacher_set, output_space="classes:10", temperature=4.0,
                            row_ids=IDS, target_kind="sampled")
    assert stored.targets_for(batch).records["mlp"].kind == "sampled"


def test_a_store_on_object_storage_is_found_read_and_refused_like_a_local_one(s3_server):
    """The store root is a URI (moto's S3 server on loopback): shards in one attempt's
    subfolder, the manifest written last names them, other attempts are dropped, and a key
    that differs or a store without its manifest is refused as it is on disk."""
    s3, options = s3_server
    root = f"s3://runs-data/stores?{options}"
    rng = np.random.default_rng(0)
    x, logits = rng.random((N, 8), dtype=np.float32), rng.normal(size=(N, C)).astype(np.float32)
    key = StoreKey(rows_fingerprint("classes:10", row_hashes(IDS, x, np.arange(N) % C)), "mlp", "v1", K, 4.0)
    write_parquet(pa.table({"x": [1]}), join(key.folder(root), "attempt-old", "part-0.parquet"))  # interrupted
    with pytest.raises(SoftTargetStoreError, match="unfinished precompute"):
        find_store(root, key)
    manifest = write_store(root, key, logits, shards="attempt-new")
    drop_other_attempts(key.folder(root), kept="attempt-new")
    prefix = f"runs-data/stores/{key.dataset}/mlp-v1-k4-T4"
    assert s3.get_file_info(f"{prefix}/attempt-old").type.name == "NotFound"
    assert manifest.files == [f"attempt-new/part-{i}.parquet" for i in range(3)]
    assert find_store(root, key) == manifest
    with pytest.raises(SoftTargetStoreError, match="teacher_version 'v1' \\(needed 'v2'\\)"):
        find_store(root, replace(key, teacher_version="v2"))

    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    split = Split(x, np.zeros(N, dtype=np.int64), ids=IDS)
    stored = StoredTeachers({"mlp": key.folder(root)}, teacher_set, output_space="classes:10", temperature=4.0,
                            row_ids=IDS)
    batch = plan_epoch(split, epoch=0, seed=1, shard=0, num_shards=1, batch_size=8)[0]
    expected = pack_soft_targets(logits[batch.samples], batch_id=batch.batch_id, teacher="mlp", teacher_version="v1",
                                 temperature=4.0, output_space="classes:10", dense_max_classes=1, top_k=K)
    assert np.array_equal(stored.targets_for(batch).records["mlp"].topk_idx, expected.topk_idx)


def test_a_shard_with_bad_values_is_refused_when_the_nodes_copy_would_be_made_and_leaves_none(store, own_cache):
    """Values are checked once per node, before the mapped copy is written: a shard that fails
    leaves no copy behind, so every later reader checks (and refuses) it again."""
    root, key, *_ = store
    shard = Path(key.folder(root)) / "part-1.parquet"
    table = pq.read_table(shard)
    column = table.column("tail_logprob").to_numpy().copy()
    column[2] = np.nan
    pq.write_table(table.set_column(table.schema.get_field_index("tail_logprob"), "tail_logprob",
                                    pa.array(column)), shard)
    teacher_set = TeacherSet(1, {"mlp": TeacherEntry("mlp", 1.0, "classes:10", C, "v1")})
    for _ in range(2):
        with pytest.raises(SoftTargetError, match="shard part-1.parquet: .*NaN"):
            StoredTeachers({"mlp": str(key.folder(root))}, teacher_set, output_space="classes:10", temperature=4.0)
        assert len(list((own_cache / "mapped").glob("*.arrow"))) == 1  # part-0's; none of part-1
