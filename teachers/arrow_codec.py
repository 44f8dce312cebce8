"""The soft-target record as Apache Arrow: one codec for gRPC payloads and the Parquet store.

One row per sample. A top-k record has columns `topk_idx` (int32[k]), `topk_logprob`
(float16[k]) and `tail_logprob` (float32); a sampled record `topk_idx`, `topk_logprob` and
`sample_weight` (float16[k]); a dense record has `logprob` (float32[C]) and an embedding record
`logits` (float32[d]). Named
features are `feature/<name>` (float16[d]); the offline store adds `sample` (int64, the row of
the dataset split). Everything else a record carries (teacher, version, temperature, output
space, batch id, schema version) is schema metadata, so the per-row cost is the ideal payload.

Decoding reads untrusted bytes: the IPC stream is validated in full by Arrow, the schema must be
exactly the one expected, and the values are checked (bounds, finiteness, probability mass)
before a record is returned. Any problem raises `SoftTargetDecodeError`.
"""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
import pyarrow as pa

from ingest import BatchId
from teachers.errors import SoftTargetDecodeError, SoftTargetError
from teachers.soft_targets import SCHEMA_VERSION, SoftTargets, check_record_values

FEATURE_PREFIX = "feature/"
SAMPLE_COLUMN = "sample"
ROW_ID_COLUMN = "row_id"  # the offline store's key: the row id of each record row's sample
_META_PREFIX = "distillery."
_META_KEYS = ("schema_version", "kind", "batch_id", "teacher", "teacher_version", "temperature",
              "output_space", "num_classes", "features")
# Limits on what a decoder accepts from the wire; far above any real batch.
MAX_PAYLOAD_BYTES = 1 << 30
MAX_ROWS = 1 << 22
MAX_CLASSES = 1 << 24
MAX_METADATA_BYTES = 1 << 16


def fixed_size_list(values: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    """A [N, d] array as a fixed-size-list column, without copying when dtypes already match."""
    values = np.ascontiguousarray(values, dtype=value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=value_type), values.shape[1])


def record_schema(record: SoftTargets, *, with_sample: bool = False, batch_id: Optional[str] = None) -> pa.Schema:
    """The Arrow schema of `record`'s table (metadata included)."""
    fields = []
    if with_sample:
        fields.append(pa.field(SAMPLE_COLUMN, pa.int64(), nullable=False))
    if record.is_dense:
        fields.append(pa.field(_DENSE_COLUMN[record.kind], pa.list_(pa.float32(), record.num_classes), nullable=False))
    else:
        fields += [pa.field(name, value_type, nullable=False)
                   for name, value_type in _sparse_fields(record.kind, int(record.topk_idx.shape[1])).items()]
    for name, value in record.features.items():
        fields.append(pa.field(FEATURE_PREFIX + name, pa.list_(pa.float16(), int(np.prod(value.shape[1:]))),
                               nullable=False))
    meta = {
        "schema_version": str(record.schema_version),
        "kind": record.kind,
        "batch_id": str(record.batch_id) if batch_id is None else batch_id,
        "teacher": record.teacher,
        "teacher_version": record.teacher_version,
        "temperature": repr(float(record.temperature)),
        "output_space": record.output_space,
        "num_classes": str(record.num_classes),
        "features": json.dumps({n: list(v.shape[1:]) for n, v in record.features.items()}),
    }
    return pa.schema(fields, metadata={_META_PREFIX + k: v for k, v in meta.items()})


def to_table(record: SoftTargets, sample: Optional[np.ndarray] = None,
             row_ids: Optional[np.ndarray] = None) -> pa.Table:
    """`record` as an Arrow table; `sample` (dataset row per record row) adds the store's sample
    column, `row_ids` (the row id per record row) its key column."""
    schema = record_schema(record, with_sample=sample is not None, batch_id="" if sample is not None else None)
    columns = [] if sample is None else [pa.array(np.asarray(sample, dtype=np.int64))]
    if row_ids is not None:
        schema = schema.insert(len(columns), pa.field(ROW_ID_COLUMN, pa.string(), nullable=False))
        columns.append(pa.array(np.asarray(row_ids).astype(str), pa.string()))
    if record.is_dense:
        columns.append(fixed_size_list(getattr(record, _DENSE_COLUMN[record.kind]), pa.float32()))
    else:
        columns += [fixed_size_list(record.topk_idx, pa.int32()), fixed_size_list(record.topk_logprob, pa.float16())]
        columns.append(fixed_size_list(record.sample_weight, pa.float16()) if record.is_sampled
                       else pa.array(np.asarray(record.tail_logprob, dtype=np.float32)))
    for value in record.features.values():
        columns.append(fixed_size_list(value.reshape(len(value), -1), pa.float16()))
    return pa.Table.from_arrays(columns, schema=schema)


_DENSE_COLUMN = {"dense": "logprob", "embedding": "logits"}  # the kinds with whole rows, and their column


def _sparse_fields(kind: str, k: int) -> dict[str, pa.DataType]:
    """The columns of a top-k or sampled record with k entries per row."""
    last = {"sample_weight": pa.list_(pa.float16(), k)} if kind == "sampled" else {"tail_logprob": pa.float32()}
    return {"topk_idx": pa.list_(pa.int32(), k), "topk_logprob": pa.list_(pa.float16(), k), **last}


def _ipc_bytes(table: pa.Table) -> bytes:
    """`table` as one Arrow IPC stream: its schema and a single record batch."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return sink.getvalue().to_pybytes()


def encode(record: SoftTargets) -> bytes:
    """`record` as one Arrow IPC stream (schema + one record batch)."""
    return _ipc_bytes(to_table(record))


def decode(payload: bytes, *, source: str = "payload") -> SoftTargets:
    """Read one record from untrusted IPC bytes; raise `SoftTargetDecodeError` on anything wrong."""
    return table_to_record(read_ipc_table(payload, source=source), source=source)


def read_ipc_table(payload: bytes, *, source: str) -> pa.Table:
    """An IPC stream's table, fully validated by Arrow (offsets, lengths, buffer sizes)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise SoftTargetDecodeError(f"{source}: expected bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SoftTargetDecodeError(f"{source}: {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(payload))
        _check_metadata_size(reader.schema, source)
        batches = []
        for batch in reader:
            batch.validate(full=True)
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    except SoftTargetDecodeError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, IndexError, MemoryError) as exc:
        raise SoftTargetDecodeError(f"{source}: not a valid Arrow IPC stream: {type(exc).__name__}: "
                                    f"{str(exc)[:200]}") from None


def _check_metadata_size(schema: pa.Schema, source: str) -> None:
    size = sum(len(k) + len(v) for k, v in (schema.metadata or {}).items())
    if size > MAX_METADATA_BYTES:
        raise SoftTargetDecodeError(f"{source}: schema metadata of {size} bytes is over {MAX_METADATA_BYTES}")


def _metadata(schema: pa.Schema, source: str) -> dict[str, str]:
    raw = schema.metadata or {}
    meta = {}
    for key in _META_KEYS:
        value = raw.get((_META_PREFIX + key).encode())
        if value is None:
            raise SoftTargetDecodeError(f"{source}: schema metadata lacks {_META_PREFIX + key}")
        try:
            meta[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise SoftTargetDecodeError(f"{source}: schema metadata {_META_PREFIX + key} is not UTF-8") from None
    return meta


def _as_int(text: str, what: str, source: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SoftTargetDecodeError(f"{source}: {what} {text[:40]!r} is not an integer") from None
    if not low <= value <= high:
        raise SoftTargetDecodeError(f"{source}: {what} {value} is outside [{low}, {high}]")
    return value


def _expect_field(schema: pa.Schema, name: str, expected: pa.DataType, source: str) -> None:
    index = schema.get_field_index(name)
    if index < 0:
        raise SoftTargetDecodeError(f"{source}: column {name!r} is missing")
    actual = schema.field(index).type
    if actual != expected:
        raise SoftTargetDecodeError(f"{source}: column {name!r} has type {actual}, expected {expected}")


def _one_array(table: pa.Table, name: str) -> pa.Array:
    """Column `name` as one array: its only chunk as it is (no copy: a mapped store's column
    stays in the mapping), or its chunks joined."""
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _matrix(table: pa.Table, name: str, dtype: np.dtype) -> np.ndarray:
    column = _one_array(table, name)
    if column.null_count:
        raise SoftTargetDecodeError(f"column {name!r} has {column.null_count} null rows")
    width = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=dtype).reshape(len(column), width)


def _vector(table: pa.Table, name: str, dtype: np.dtype) -> np.ndarray:
    column = _one_array(table, name)
    if column.null_count:
        raise SoftTargetDecodeError(f"column {name!r} has {column.null_count} null rows")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def table_to_record(table: pa.Table, *, source: str, batch_id: Optional[BatchId] = None,
                    check_values: bool = True) -> SoftTargets:
    """Check `table` against the schema its metadata announces and turn it into a record.

    `batch_id` overrides the id in the metadata (rows read from the offline store).
    `check_values=False` skips the checks that read every value (ranges, finiteness, mass),
    for a table they already passed: a store shard's node-local copy.
    """
    meta = _metadata(table.schema, source)
    version = _as_int(meta["schema_version"], "schema version", source, 0, 1 << 20)
    if version != SCHEMA_VERSION:
        raise SoftTargetDecodeError(f"{source}: soft-target schema version {version}; this side reads "
                                    f"version {SCHEMA_VERSION} (upgrade the older side)")
    num_classes = _as_int(meta["num_classes"], "num_classes", source, 1, MAX_CLASSES)
    if table.num_rows > MAX_ROWS:
        raise SoftTargetDecodeError(f"{source}: {table.num_rows} rows is over the {MAX_ROWS}-row limit")
    try:
        temperature = float(meta["temperature"])
        feature_shapes = json.loads(meta["features"])
    except ValueError:
        raise SoftTargetDecodeError(f"{source}: schema metadata temperature/features is malformed") from None
    if not np.isfinite(temperature) or temperature <= 0:
        raise SoftTargetDecodeError(f"{source}: temperature {temperature} must be finite and > 0")
    expected = _expected_columns(table.schema, meta["kind"], num_classes, feature_shapes, source)
    unexpected = set(table.schema.names) - expected - {SAMPLE_COLUMN, ROW_ID_COLUMN}
    if unexpected:
        raise SoftTargetDecodeError(f"{source}: unexpected columns {sorted(unexpected)}")
    record = SoftTargets(batch_id=BatchId.parse(meta["batch_id"]) if batch_id is None else batch_id, teacher=meta["teacher"],
                         teacher_version=meta["teacher_version"], temperature=temperature,
                         output_space=meta["output_space"], num_classes=num_classes)
    try:
        if meta["kind"] in _DENSE_COLUMN:
            column = _DENSE_COLUMN[meta["kind"]]
            setattr(record, column, _matrix(table, column, np.float32))
        else:
            record.topk_idx = _matrix(table, "topk_idx", np.int32)
            record.topk_logprob = _matrix(table, "topk_logprob", np.float16)
            if meta["kind"] == "sampled":
                record.sample_weight = _matrix(table, "sample_weight", np.float16)
            else:
                record.tail_logprob = _vector(table, "tail_logprob", np.float32)
        for name, shape in feature_shapes.items():
            flat = _matrix(table, FEATURE_PREFIX + name, np.float16)
            record.features[name] = flat.reshape(len(flat), *shape)
        if check_values:
            check_record_values(record)
    except SoftTargetDecodeError as exc:
        raise SoftTargetDecodeError(f"{source}: {exc}") from None
    except SoftTargetError as exc:
        raise SoftTargetDecodeError(f"{source}: {exc}") from None
    return record


def _expected_columns(schema: pa.Schema, kind: str, num_classes: int, feature_shapes, source: str) -> set[str]:
    if kind in _DENSE_COLUMN:
        _expect_field(schema, _DENSE_COLUMN[kind], pa.list_(pa.float32(), num_classes), source)
        names = {_DENSE_COLUMN[kind]}
    elif kind in ("topk", "sampled"):
        index = schema.get_field_index("topk_idx")
        k = schema.field(index).type.list_size if index >= 0 and pa.types.is_fixed_size_list(
            schema.field(index).type) else 0
        if not 1 <= k <= num_classes:
            raise SoftTargetDecodeError(f"{source}: topk_idx must be int32[k] with 1 <= k <= {num_classes}")
        fields = _sparse_fields(kind, k)
        for name, value_type in fields.items():
            _expect_field(schema, name, value_type, source)
        names = set(fields)
    else:
        raise SoftTargetDecodeError(f"{source}: record kind {kind[:20]!r} is not 'dense', 'embedding', 'topk' or "
                                    f"'sampled'")
    if not isinstance(feature_shapes, dict):
        raise SoftTargetDecodeError(f"{source}: features metadata must map names to shapes")
    for name, shape in feature_shapes.items():
        if not (isinstance(shape, list) and all(isinstance(d, int) and 0 < d <= MAX_CLASSES for d in shape)):
            raise SoftTargetDecodeError(f"{source}: feature {name[:40]!r} has a malformed shape {str(shape)[:40]}")
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if size > MAX_CLASSES:
            raise SoftTargetDecodeError(f"{source}: feature {name[:40]!r} of {size} values is too large")
        _expect_field(schema, FEATURE_PREFIX + name, pa.list_(pa.float16(), size), source)
        names.add(FEATURE_PREFIX + name)
    if schema.get_field_index(SAMPLE_COLUMN) >= 0:
        _expect_field(schema, SAMPLE_COLUMN, pa.int64(), source)
    if schema.get_field_index(ROW_ID_COLUMN) >= 0:
        _expect_field(schema, ROW_ID_COLUMN, pa.string(), source)
    return names


# --- inputs: what a client sends a teacher ------------------------------------------------------

def model_inputs(inputs: np.ndarray) -> np.ndarray:
    """Inputs as a teacher takes them: int64 token ids from any integer array, else float32 features."""
    inputs = np.asarray(inputs)
    return inputs.astype(np.int64 if np.issubdtype(inputs.dtype, np.integer) else np.float32, copy=False)


def encode_inputs(inputs: np.ndarray) -> bytes:
    """Inputs [B, F] as an IPC stream with one column `inputs`: float32[F] for features,
    int64[F] for token ids (any integer array)."""
    inputs = model_inputs(inputs)
    arrow_type = pa.int64() if inputs.dtype == np.int64 else pa.float32()
    return _ipc_bytes(pa.table({"inputs": fixed_size_list(inputs.reshape(len(inputs), -1), arrow_type)}))


def decode_inputs(payload: bytes, *, in_features: int, source: str, vocab_size: int | None = None) -> np.ndarray:
    """Inputs sent by an untrusted client, at most MAX_ROWS rows: float32 [B, in_features],
    finite; or for a token-input teacher (`vocab_size` given), int64 token ids [B, in_features]
    in [0, vocab_size), packed with their roles for a language model (`ingest.token_layout`)."""
    tokens = vocab_size is not None
    table = read_ipc_table(payload, source=source)
    _expect_field(table.schema, "inputs", pa.list_(pa.int64() if tokens else pa.float32(), in_features), source)
    if table.schema.names != ["inputs"] or table.num_rows > MAX_ROWS or table.num_rows == 0:
        raise SoftTargetDecodeError(f"{source}: expected one column 'inputs' with 1..{MAX_ROWS} rows")
    try:
        x = _matrix(table, "inputs", np.int64 if tokens else np.float32)
    except SoftTargetDecodeError as exc:
        raise SoftTargetDecodeError(f"{source}: {exc}") from None
    if tokens:
        from ingest import TARGET, token_ids, token_roles

        ids, roles = token_ids(x), token_roles(x)
        if (x < 0).any() or (roles > TARGET).any() or (ids >= vocab_size).any():
            raise SoftTargetDecodeError(f"{source}: token ids must lie in [0, {vocab_size}), got {ids.min()}..{ids.max()} "
                                        f"(roles {roles.min()}..{roles.max()}, of ingest.token_layout)")
    if not tokens and not np.isfinite(x).all():
        raise SoftTargetDecodeError(f"{source}: inputs hold NaN or Inf")
    return x


def chunks(payload: bytes, chunk_bytes: int) -> list[memoryview]:
    """`payload` split into pieces of at most `chunk_bytes` (at least one piece)."""
    view = memoryview(payload)
    return [view[i:i + chunk_bytes] for i in range(0, max(len(view), 1), chunk_bytes)] or [view]
