"""Splits, shards and batch ids are deterministic and disjoint."""

import numpy as np

from cluster.config import DataConfig, StudentConfig, ModelSpec
from students.data import load_dataset, plan_epoch, student_subset
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
    assert len(set(ids)) == len(ids) and ids[0] == "e3-s0-b0"
    again = plan_epoch(train, epoch=3, seed=1, shard=0, num_shards=2, batch_size=16)
    np.testing.assert_array_equal(again[2].x, plans[0][2].x)
    other_epoch = plan_epoch(train, epoch=4, seed=1, shard=0, num_shards=2, batch_size=16)
    assert not np.array_equal(other_epoch[0].y, plans[0][0].y)


def test_deepspeed_config_follows_student_config():
    cfg = StudentConfig(model=ModelSpec(factory="teachers.zoo:mlp"), micro_batch_size=8,
                        gradient_accumulation_steps=3, zero_stage=3, precision="bf16")
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 48 and ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
