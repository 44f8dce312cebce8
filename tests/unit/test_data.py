"""Splits, shards and batch ids are deterministic and disjoint."""

import numpy as np
import pytest

from cluster.config import ModelSpec
from ingest.batches import plan_epoch
from ingest.config import DataConfig
from ingest.loading import load_dataset, student_subset
from students.config import StudentConfig
from students.deepspeed_config import deepspeed_config


def test_split_is_deterministic_and_stratified():
    a, b = load_dataset(DataConfig()), load_dataset(DataConfig())
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert a.num_classes == 10 and a.in_features == 64
    assert len(a.train.y) + len(a.test.y) == 1797
    counts = np.bincount(a.test.y)
    assert counts.min() >= 40


def test_shards_are_disjoint_and_batch_ids_stable():
    ds = load_dataset(DataConfig())
    train = student_subset(ds.train, 150)
    plans = [plan_epoch(train, epoch=3, seed=1, shard=s, num_shards=2, batch_size=16) for s in range(2)]
    assert len(plans[0]) == len(plans[1]) == 4
    ids = [b.batch_id for p in plans for b in p]
    assert len(set(ids)) == len(ids) and str(ids[0]) == "e3-s0-b0"
    again = plan_epoch(train, epoch=3, seed=1, shard=0, num_shards=2, batch_size=16)
    np.testing.assert_array_equal(again[2].x, plans[0][2].x)
    other_epoch = plan_epoch(train, epoch=4, seed=1, shard=0, num_shards=2, batch_size=16)
    assert not np.array_equal(other_epoch[0].y, plans[0][0].y)


def test_deepspeed_config_follows_student_config():
    cfg = StudentConfig(model=ModelSpec(factory="models.zoo:mlp"), micro_batch_size=8,
                        gradient_accumulation_steps=3, zero_stage=3, precision="bf16")
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 48 and ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert "offload_optimizer" not in ds["zero_optimization"] and ds["optimizer"]["params"]["torch_adam"]
    offload = deepspeed_config(cfg.model_copy(update={"offload_optimizer": True, "gpus_per_worker": 1}), world_size=2)
    assert offload["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert not offload["optimizer"]["params"]["torch_adam"]  # DeepSpeed's CPU Adam runs the offloaded step
    with pytest.raises(ValueError, match="use zero_stage 1, 2 or 3 with it"):
        StudentConfig(model=ModelSpec(factory="models.zoo:mlp"), zero_stage=0, offload_optimizer=True)


def test_digit_views_are_pairs_joined_by_id():
    from ingest.bundled import digit_images
    from ingest.paired_data import digit_view

    ds = load_dataset(DataConfig(dataset="digits_views", teacher_column="image", student_column="profile"))
    assert ds.cross_modal and ds.in_features == 16 and ds.teacher_view().in_features == 64
    pixels, labels = digit_images()
    ids = np.array([int(i.removeprefix("pair-")) for i in ds.train.ids])
    # each row pairs the views of the same digit, although each view was logged in its own order
    np.testing.assert_array_equal(ds.train.y, labels[ids])
    np.testing.assert_allclose(ds.train.teacher_x, pixels[ids])
    np.testing.assert_allclose(ds.train.x, digit_view(pixels[ids], "profile"))
    batch = plan_epoch(ds.train, epoch=0, seed=0, shard=0, num_shards=1, batch_size=8)[0]
    assert batch.x.shape == (8, 16) and batch.teacher_x.shape == (8, 64)
    np.testing.assert_array_equal(batch.columns["task"], batch.y // 2)
    subset = student_subset(ds.train, 100)
    assert subset.teacher_x.shape == (100, 64) and len(subset.ids) == 100


def test_join_keeps_common_ids_and_refuses_repeated_ones():
    import pytest

    from ingest.paired_data import join_pairs

    left, right = join_pairs(np.array([5, 1, 9, 3]), np.array([3, 7, 5]))
    np.testing.assert_array_equal(np.array([5, 1, 9, 3])[left], np.array([3, 7, 5])[right])
    assert sorted(np.array([5, 1, 9, 3])[left].tolist()) == [3, 5]
    with pytest.raises(ValueError, match="repeats pair ids \\[2\\]"):
        join_pairs(np.array([2, 2]), np.array([2]))
