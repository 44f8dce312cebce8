import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from teachers.arrow_codec import (chunks, decode, decode_inputs, encode, encode_inputs, table_to_record,
                                  to_table)
from teachers.errors import SoftTargetDecodeError
from teachers.soft_targets import SCHEMA_VERSION, pack_soft_targets


def make_record(batch=4, classes=10, k=3, dense=True, features=None, seed=0):
    logits = np.random.default_rng(seed).normal(size=(batch, classes)).astype(np.float32) * 3
    rec = pack_soft_targets(logits, batch_id="e1-s0-b7", teacher="mlp", teacher_version="abc123",
                            temperature=2.5, output_space=f"classes:{classes}",
                            dense_max_classes=classes if dense else 1, top_k=k)
    rec.features.update(features or {})
    return rec


def assert_same(a, b):
    for name in ("batch_id", "teacher", "teacher_version", "temperature", "output_space", "num_classes",
                 "schema_version"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("logprob", "logits", "topk_idx", "topk_logprob", "tail_logprob", "sample_weight"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.features.keys() == b.features.keys()
    for name in a.features:
        assert np.array_equal(a.features[name].astype(np.float16), b.features[name])


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 40), classes=st.integers(2, 300), k=st.integers(1, 300), dense=st.booleans(),
       feature_dims=st.lists(st.integers(1, 5), min_size=0, max_size=3), seed=st.integers(0, 1000))
def test_round_trip(batch, classes, k, dense, feature_dims, seed):
    features = {f"layer{i}": np.random.default_rng(seed).normal(size=(batch, d, 2)).astype(np.float16)
                for i, d in enumerate(feature_dims)}
    rec = make_record(batch, classes, min(k, classes), dense, features, seed)
    assert_same(rec, decode(encode(rec)))


def test_schema_carries_version_and_metadata():
    schema = to_table(make_record(dense=False)).schema
    assert schema.metadata[b"distillery.schema_version"] == str(SCHEMA_VERSION).encode()
    assert schema.field("topk_idx").type == pa.list_(pa.int32(), 3)
    assert schema.field("topk_logprob").type == pa.list_(pa.float16(), 3)
    assert schema.field("tail_logprob").type == pa.float32()


def test_wire_bytes_are_close_to_the_ideal_payload():
    k, rows = 8, 4096
    logits = np.random.default_rng(0).normal(size=(rows, 2000)).astype(np.float32)
    rec = pack_soft_targets(logits, batch_id="b", teacher="t", teacher_version="v", temperature=1.0,
                            output_space="classes:2000", dense_max_classes=10, top_k=k)
    assert len(encode(rec)) / (rows * (k * 6 + 4)) < 1.05


def test_parquet_uses_the_same_codec(tmp_path):
    rec = make_record(batch=6, classes=50, k=5, dense=False)
    pq.write_table(to_table(rec, sample=np.arange(10, 16)), tmp_path / "part.parquet")
    table = pq.read_table(tmp_path / "part.parquet")
    back = table_to_record(table, source="store", batch_id="e1-s0-b7")
    assert_same(rec, back)
    assert table.column("sample").to_pylist() == list(range(10, 16))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.__setitem__(b"distillery.schema_version", b"1"), "schema version 1; this side reads version 2"),
    (lambda m: m.pop(b"distillery.teacher"), "lacks distillery.teacher"),
    (lambda m: m.__setitem__(b"distillery.num_classes", b"3"), "topk_idx|indices|k <="),
    (lambda m: m.__setitem__(b"distillery.temperature", b"nan"), "temperature"),
    (lambda m: m.__setitem__(b"distillery.kind", b"sparse"), "is not .dense., .embedding., .topk. or .sampled."),
])
def test_bad_metadata_is_refused(change, message):
    table = to_table(make_record(classes=10, k=5, dense=False))
    meta = dict(table.schema.metadata)
    change(meta)
    with pytest.raises(SoftTargetDecodeError, match=message):
        table_to_record(table.replace_schema_metadata(meta), source="test")


def test_bad_values_are_refused():
    rec = make_record(classes=10, k=5, dense=False)
    rec.topk_idx[0, 0] = 10  # out of range
    with pytest.raises(SoftTargetDecodeError, match="outside"):
        decode(encode(rec), source="teacher x")
    rec = make_record()
    rec.logprob[1, 1] = np.inf
    with pytest.raises(SoftTargetDecodeError, match="NaN or Inf"):
        decode(encode(rec))


def test_inputs_round_trip_and_checks():
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    assert np.array_equal(decode_inputs(encode_inputs(x), in_features=64, source="c"), x)
    with pytest.raises(SoftTargetDecodeError, match="float32\\[64\\]|type"):
        decode_inputs(encode_inputs(x[:, :10]), in_features=64, source="c")
    x[0, 0] = np.nan
    with pytest.raises(SoftTargetDecodeError, match="NaN"):
        decode_inputs(encode_inputs(x), in_features=64, source="c")


def test_chunks_reassemble():
    payload = bytes(range(256)) * 10
    parts = chunks(payload, 1000)
    assert [len(p) for p in parts] == [1000, 1000, 560] and b"".join(parts) == payload
    assert len(chunks(b"", 10)) == 1
