"""The students' batches from a stream (`ingest.streamed`) and the pieces of a streamed
source that run without Ray: row-id batch ids, resume by skipping what the epoch applied, the
look-ahead copy a soft-target source reads, the worker's test split, the config rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.config import DataConfig, SourceConfig
from ingest.file_data import DataError, to_stream_rows
from ingest.loading import load_dataset
from ingest.streamed import StreamedBatches, stream_batch
from orchestration.config import RunConfig
from students.checkpoint import ClientState

pytestmark = pytest.mark.usefixtures("own_cache")  # the driver's scans are cached there

FEATURES = 4


def _rows(ids: list[str]) -> dict[str, np.ndarray]:
    n = len(ids)
    return {"id": np.array(ids, dtype=object), "x": np.arange(n * FEATURES, dtype=np.float32).reshape(n, FEATURES),
            "y": np.arange(n) % 3}


def _epochs(epochs: int = 2, batches: int = 4, size: int = 3):
    """A stream whose epoch e holds `batches` batches of rows named by epoch and position."""
    def read_epoch(epoch: int):
        return [_rows([f"row-{(b * size + i + epoch) % (batches * size)}" for i in range(size)])
                for b in range(batches)]
    return read_epoch


def test_a_batch_is_named_by_its_rows_not_its_position():
    first, again = stream_batch(0, 0, _rows(["a", "b"])), stream_batch(0, 7, _rows(["a", "b"]))
    assert first.batch_id == again.batch_id and str(first.batch_id).startswith("e0-r")
    assert stream_batch(0, 0, _rows(["a", "c"])).batch_id != first.batch_id
    assert stream_batch(1, 0, _rows(["a", "b"])).batch_id != first.batch_id  # an epoch's batch is its own
    assert first.x.dtype == np.float32 and first.teacher_x is first.x and first.x.flags.writeable


def test_epochs_in_order_and_a_look_ahead_copy_of_the_same_batches():
    state = ClientState()
    plan = StreamedBatches(_epochs(), 2, state)
    ahead = [b.batch_id for b in plan.remaining()]
    loop = [b.batch_id for epoch in range(2) for b in plan.epoch(epoch)]
    assert loop == ahead and len(loop) == 8
    assert plan.planned_ids() == loop


def test_resume_skips_what_the_epoch_applied_and_the_ledger_sees_the_skipped_batches():
    fresh = ClientState()
    plan = StreamedBatches(_epochs(), 2, fresh)
    ids = []
    for batch in plan.epoch(0):
        ids.append(batch.batch_id)
        fresh.applied(batch.batch_id, batch.index, len(batch.y))
        if len(ids) == 3:
            break
    # the run stops after 3 batches of epoch 0 and resumes from its checkpoint
    resumed = ClientState(step=fresh.step, epoch=0, next_batch=fresh.next_batch, applied_ids=dict(fresh.applied_ids),
                          delivered_ids=dict(fresh.delivered_ids))
    again = StreamedBatches(_epochs(), 2, resumed)
    rest = [b for epoch in range(2) for b in again.epoch(epoch)]
    assert [b.index for b in rest[:2]] == [3, 0] and len(rest) == 5
    for batch in rest:
        resumed.applied(batch.batch_id, batch.index, len(batch.y))
    counts = resumed.ledger(again.planned_ids())
    assert counts == {"batches_planned": 8, "batches_lost": 0, "batches_applied_twice": 0, "batches_unplanned": 0}


def test_a_stream_that_changed_order_shows_as_lost_batches():
    state = ClientState()
    plan = StreamedBatches(_epochs(epochs=1), 1, state)
    for batch in plan.epoch(0):
        state.applied(batch.batch_id, batch.index, len(batch.y))
        break
    shuffled = lambda epoch: list(reversed(_epochs()(epoch)))  # noqa: E731 - the resumed stream's order differs
    resumed = ClientState(epoch=0, next_batch=1, applied_ids=dict(state.applied_ids),
                          delivered_ids=dict(state.delivered_ids))
    again = StreamedBatches(shuffled, 1, resumed)
    for batch in again.epoch(0):
        resumed.applied(batch.batch_id, batch.index, len(batch.y))
    counts = resumed.ledger(again.planned_ids())
    # the skipped first batch was never trained, and the one trained before the stop came again
    assert counts == {"batches_planned": 4, "batches_lost": 1, "batches_applied_twice": 1, "batches_unplanned": 0}


def _source(tmp_path, n=40, **extra) -> SourceConfig:
    rng = np.random.default_rng(0)
    table = pa.table({"key": [f"k{i}" for i in range(n)], "pixels": rng.normal(size=(n, FEATURES)).tolist(),
                      "digit": (np.arange(n) % 3).tolist(), "task": (np.arange(n) % 2).tolist()})
    for part in range(2):
        pq.write_table(table.slice(part * n // 2, n // 2), tmp_path / f"part-{part}.parquet")
    return SourceConfig(format="parquet", train=str(tmp_path / "part-*.parquet"),
                        columns={"input": "pixels", "label": "digit", "id": "key", "task": "task"}, **extra)


def test_stream_rows_hold_out_the_same_test_rows_as_the_in_memory_split(tmp_path):
    source = _source(tmp_path, test_fraction=0.3)
    in_memory = load_dataset(DataConfig(source=source))
    table = pa.concat_tables([pq.read_table(tmp_path / f"part-{p}.parquet") for p in range(2)])
    rows = to_stream_rows(table, source, "parts")
    assert len(rows["id"]) == len(in_memory.train.y) and rows["x"].shape == (len(rows["id"]), FEATURES)
    assert sorted(map(tuple, rows["x"].tolist())) == sorted(map(tuple, in_memory.train.x.tolist()))
    assert set(rows) == {"id", "x", "y", "task"}


def test_a_worker_of_a_streamed_source_holds_the_test_split_only(tmp_path):
    source = _source(tmp_path, test_fraction=0.3, stream=True, num_classes=3)
    in_memory = load_dataset(DataConfig(source=source))
    worker = load_dataset(DataConfig(source=source), in_worker=True)
    assert worker.train.x.shape == (0, FEATURES) and worker.in_features == FEATURES and worker.num_classes == 3
    np.testing.assert_array_equal(np.sort(worker.test.y), np.sort(in_memory.test.y))
    without_classes = _source(tmp_path, test_fraction=0.3, stream=True)
    with pytest.raises(DataError, match="num_classes"):
        load_dataset(DataConfig(source=without_classes), in_worker=True)


def test_a_worker_sent_the_drivers_test_split_reads_no_file(tmp_path):
    """The rows held out of train would cost each worker a pass over every train file: a
    worker that the driver sends its test split builds the same dataset with the files gone."""
    source = _source(tmp_path, test_fraction=0.3, stream=True, num_classes=3)
    driver = load_dataset(DataConfig(source=source))
    read = load_dataset(DataConfig(source=source), in_worker=True)
    for part in tmp_path.glob("part-*.parquet"):
        part.unlink()
    sent = load_dataset(DataConfig(source=source), in_worker=True, test=driver.test)
    assert sent.test.ids.tolist() == read.test.ids.tolist() and sent.fingerprint == read.fingerprint
    np.testing.assert_array_equal(sent.test.x, read.test.x)
    assert sent.train.x.shape == read.train.x.shape and sent.num_classes == read.num_classes
    with pytest.raises(DataError):
        load_dataset(DataConfig(source=source), in_worker=True)


def test_a_streamed_source_needs_row_ids_and_refuses_what_reads_the_split_in_memory(tmp_path):
    with pytest.raises(ValueError, match="columns.id: a streamed source needs a stable row id"):
        SourceConfig(format="parquet", train="x.parquet", test_fraction=0.2, stream=True,
                     columns={"input": "pixels", "label": "digit"})
    base = {"run": {"name": "s"}, "student": {"model": {"factory": "models.zoo:mlp"}},
            "data": {"source": _source(tmp_path, test_fraction=0.3, stream=True).model_dump()}}
    RunConfig.model_validate(base)
    with pytest.raises(ValueError, match="data.student_train_samples read"):
        RunConfig.model_validate({**base, "data": {**base["data"], "student_train_samples": 20}})


def _transfer_files(tmp_path, parts: list[dict]) -> str:
    for number, rows in enumerate(parts):
        pq.write_table(pa.table(rows), tmp_path / f"transfer-{number}.parquet")
    return str(tmp_path / "transfer-*.parquet")


def _transfer_rows(start: int, n: int = 10, width: int = FEATURES, label: int = 0) -> dict:
    return {"key": [f"t{i}" for i in range(start, start + n)], "pixels": np.ones((n, width)).tolist(),
            "digit": [label] * n, "task": [0] * n}


def test_a_streamed_transfer_split_is_checked_row_by_row_on_the_driver_and_not_held(tmp_path):
    train = _source(tmp_path, test_fraction=0.3, stream=True)
    good = train.model_copy(update={"transfer": _transfer_files(tmp_path, [_transfer_rows(0), _transfer_rows(10)])})
    data = load_dataset(DataConfig(source=good))
    assert data.streamed.rows == 20 and data.streamed.class_counts.tolist() == [20, 0, 0]
    assert data.train.x.shape == (0, FEATURES) and len(data.teachers_train.y) > 0

    def refused(parts, match):
        for old in tmp_path.glob("transfer-*.parquet"):
            old.unlink()
        source = train.model_copy(update={"transfer": _transfer_files(tmp_path, parts)})
        with pytest.raises(DataError, match=match):
            load_dataset(DataConfig(source=source))

    refused([_transfer_rows(0), _transfer_rows(5)], "transfer-\\*.parquet: row ids repeat")
    refused([_transfer_rows(0), _transfer_rows(10, label=7)], "transfer-1.parquet: label 7 .* outside the output space")
    refused([_transfer_rows(0, width=FEATURES + 1)], f"transfer-0.parquet: {FEATURES + 1} input features")
    other = {**_transfer_rows(10), "digit": [0.5] * 10}
    refused([_transfer_rows(0), other], "transfer-1.parquet: its columns .* differ")


def test_the_driver_of_a_stream_reads_the_teachers_split_only_where_a_teacher_trains(tmp_path, monkeypatch):
    """A streamed train split (no transfer: the students stream train less its test rows) is
    scanned on the driver, not held; a teacher's training reads it in full, and the teacher
    cache's key is the one the in-memory path gives."""
    from cluster import ModelSpec
    from ingest import file_data
    from orchestration.teacher_training import cache_key
    from teachers import TeacherTrainingConfig, resolve_model

    source = _source(tmp_path, test_fraction=0.3)
    in_memory = load_dataset(DataConfig(source=source))
    read_whole = []
    monkeypatch.setattr(file_data, "read_split", lambda *a, _read=file_data.read_split: read_whole.append(a) or _read(*a))
    streamed = load_dataset(DataConfig(source=source.model_copy(update={"stream": True})))
    assert read_whole == [] and streamed.teacher_train is None  # chunks only: the split was never read whole
    assert streamed.train.x.shape == (0, FEATURES) and streamed.streamed.rows == len(in_memory.train.y)
    assert streamed.test.ids.tolist() == in_memory.test.ids.tolist()

    model = resolve_model(ModelSpec(factory="models.zoo:mlp"), in_features=FEATURES, num_classes=3)
    key = lambda data: cache_key(model, TeacherTrainingConfig(), DataConfig(source=source), data)  # noqa: E731
    assert key(streamed) == key(in_memory)
    teachers = streamed.teachers_train  # what a teacher's training reads
    assert read_whole and teachers.ids.tolist() == in_memory.train.ids.tolist()
    np.testing.assert_array_equal(teachers.x, in_memory.train.x)


def test_regimes_read_a_sources_columns_not_a_bundled_set_name(tmp_path):
    """Task sequences and route weighting need the source's task column; cross-modal sources
    are refused where a student would have to teach."""
    source = _source(tmp_path, test_fraction=0.3).model_dump()
    no_task = {**source, "columns": {**source["columns"], "task": None}}
    continual = {"run": {"name": "c"}, "student": {"model": {"factory": "models.zoo:mlp"}, "zero_stage": 2},
                 "continual": {"tasks": [0, 1]}}
    RunConfig.model_validate({**continual, "data": {"source": source}})
    with pytest.raises(ValueError, match="task sequences run online on classification data with a 'task' column"):
        RunConfig.model_validate({**continual, "data": {"source": no_task}})
    routed = {"run": {"name": "r"}, "student": {"model": {"factory": "models.zoo:mlp"}},
              "teachers": [{"name": "a", "model": {"factory": "models.zoo:mlp"}}],
              "distill": {"weighting": {"strategy": "route", "column": "task", "routes": {"0": "a", "1": "a"}}}}
    RunConfig.model_validate({**routed, "data": {"source": source}})
    with pytest.raises(ValueError, match="data.source \\(parquet files\\) has no column 'task'"):
        RunConfig.model_validate({**routed, "data": {"source": no_task}})
    paired = {**source, "columns": {**source["columns"], "teacher_input": "pixels"}}
    online = {"run": {"name": "o"}, "student": {"model": {"factory": "models.zoo:mlp"}},
              "online": {"peers": [{"name": "p"}, {"name": "q"}]}}
    with pytest.raises(ValueError, match="cross-modal"):
        RunConfig.model_validate({**online, "data": {"source": paired}})


def test_micro_batches_cover_every_row_once_in_a_seeded_order():
    from ingest.streamed import micro_batches

    def chunks():
        for start, size in ((0, 10), (10, 7), (17, 13)):  # 30 rows in uneven chunks
            rows = np.arange(start, start + size)
            yield {"id": rows.astype(str).astype(object), "x": rows[:, None] * np.ones((1, 3), np.float32)}

    first = list(micro_batches(chunks(), 4, np.random.default_rng([1, 0]), shuffle=True))
    again = list(micro_batches(chunks(), 4, np.random.default_rng([1, 0]), shuffle=True))
    assert len(first) == 7 and all(len(b["id"]) == 4 for b in first)  # 30 rows: 7 batches, 2 rows dropped
    seen = np.concatenate([b["id"] for b in first]).astype(int)
    assert len(set(seen)) == 28 and not np.array_equal(seen, np.sort(seen))
    assert all(np.array_equal(a["id"], b["id"]) for a, b in zip(first, again))
    assert all(np.array_equal(b["x"][:, 0], b["id"].astype(int)) for b in first)  # columns stay aligned
    in_order = np.concatenate([b["id"] for b in micro_batches(chunks(), 5, np.random.default_rng(0), shuffle=False)])
    assert in_order.astype(int).tolist() == list(range(30))


def test_the_driver_reads_a_train_split_once_for_its_scan_and_its_held_out_test_rows(tmp_path, monkeypatch):
    """The scan of `train` collects the rows held out for the test split as it goes: each
    train file is read once, and the test split is the in-memory path's."""
    import ingest.file_read as file_read

    source = _source(tmp_path, test_fraction=0.3, stream=True)
    in_memory = load_dataset(DataConfig(source=source.model_copy(update={"stream": False})))
    reads = []
    chunks = file_read._chunks
    monkeypatch.setattr(file_read, "_chunks", lambda fs, name, fmt: (reads.append(name), chunks(fs, name, fmt))[1])
    driver = load_dataset(DataConfig(source=source))
    assert sorted(reads) == sorted(str(p) for p in tmp_path.glob("part-*.parquet"))
    assert sorted(driver.test.ids.tolist()) == sorted(in_memory.test.ids.tolist())
    by_id = lambda split: split.x[np.argsort(split.ids)]  # noqa: E731
    np.testing.assert_array_equal(by_id(driver.test), by_id(in_memory.test))
    with pytest.raises(DataError, match="test_fraction 1e-09 holds out no row"):
        load_dataset(DataConfig(source=_source(tmp_path, test_fraction=1e-9, stream=True)))
