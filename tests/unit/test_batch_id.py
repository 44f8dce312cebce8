"""One batch identity from the plan to the audit: every kind of id comes back from its text as
the same id, ids order by their plan, and a made batch cannot pass for a planned one."""

import numpy as np
import pytest

from ingest import Batch, BatchId, Split, plan_epoch
from teachers.arrow_codec import decode, encode
from teachers.soft_targets import pack_soft_targets

IDS = [BatchId.planned(0, 1, 4), BatchId.streamed(2, "3f2a9c"), BatchId.made_by("kd-seed0-r0-syn7"),
       BatchId.planned(0, 1, 4).derive("skd"), BatchId.made_by("eval")]


@pytest.mark.parametrize("batch_id", IDS, ids=str)
def test_every_kind_of_id_comes_back_from_its_text(batch_id):
    assert BatchId.parse(str(batch_id)) == batch_id
    assert repr(batch_id) == repr(str(batch_id))  # what error messages quote


def test_the_texts_are_the_plans_and_any_text_is_an_id():
    assert [str(b) for b in IDS] == ["e0-s1-b4", "e2-r3f2a9c", "kd-seed0-r0-syn7", "e0-s1-b4~skd", "eval"]
    foreign = "batch 17 of another client"  # a TeacherService client of its own
    assert str(BatchId.parse(foreign)) == foreign and BatchId.parse(foreign).made == foreign
    with pytest.raises(ValueError, match="reads as another kind"):
        BatchId.made_by("e0-s1-b4")
    with pytest.raises(ValueError, match="no '~'"):
        BatchId.planned(0, 0, 0).derive("a~b")


def test_planned_ids_order_by_epoch_shard_and_index():
    shuffled = [BatchId.planned(1, 0, 0), BatchId.planned(0, 1, 10), BatchId.planned(0, 1, 2)]
    assert [str(b) for b in sorted(shuffled)] == ["e0-s1-b2", "e0-s1-b10", "e1-s0-b0"]


def test_a_plan_and_a_record_carry_the_same_id_type_across_the_wire():
    split = Split(np.zeros((8, 2), np.float32), np.arange(8) % 2)
    batch = plan_epoch(split, epoch=3, seed=0, shard=1, num_shards=2, batch_size=2)[1]
    assert batch.batch_id == BatchId.planned(3, 1, 1) and batch.payload()["batch_id"] == "e3-s1-b1"
    record = pack_soft_targets(np.zeros((2, 2), np.float32), batch_id=batch.batch_id, teacher="t", teacher_version="v",
                               temperature=1.0, output_space="classes:2", dense_max_classes=8, top_k=2)
    assert decode(encode(record), source="test").batch_id == batch.batch_id  # Arrow metadata
    assert Batch.of_inputs("e3-s1-b1", batch.x).batch_id == batch.batch_id  # the text form, as a payload carries it


def test_length_buckets_group_rows_of_similar_lengths_with_the_same_rows_and_ids():
    from ingest.token_layout import TARGET, padded, pack, sequence_lengths

    rng = np.random.default_rng(0)
    rows = [pack(rng.integers(3, 100, size=n), TARGET) for n in rng.integers(4, 64, size=240)]
    split = Split(padded(rows, 64), np.zeros(240, np.int64))
    plain = plan_epoch(split, epoch=1, seed=5, shard=0, num_shards=2, batch_size=8)
    bucketed = plan_epoch(split, epoch=1, seed=5, shard=0, num_shards=2, batch_size=8, length_buckets=5)
    assert [b.batch_id for b in bucketed] == [b.batch_id for b in plain]
    for window in range(0, len(plain), 5):  # each window of 5 batches holds the same rows, regrouped
        assert sorted(np.concatenate([b.samples for b in plain[window:window + 5]])) == \
            sorted(np.concatenate([b.samples for b in bucketed[window:window + 5]]))

    def padded_entries(plan):  # what the padding after each batch's longest sequence leaves to compute
        return sum(int(sequence_lengths(b.x).max()) * len(b.x) - int(sequence_lengths(b.x).sum()) for b in plan)
    assert padded_entries(bucketed) < padded_entries(plain) / 3
    again = plan_epoch(split, epoch=1, seed=5, shard=0, num_shards=2, batch_size=8, length_buckets=5)
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(again, bucketed))


def test_length_buckets_are_refused_where_rows_have_no_lengths_or_come_streamed():
    from ingest.config import DataConfig

    with pytest.raises(ValueError, match="only language-model rows"):
        DataConfig(dataset="digits", length_buckets=4)
    assert DataConfig(dataset="stdlib_functions", tokenizer="pkg:ingest/tokenizers/stdlib-bpe-1024",
                      length_buckets=4).length_buckets == 4
