"""The students' batches from a stream: this worker's shard of a Ray Data dataset
(`ray.train.get_dataset_shard`), one pass per epoch, cut into micro-batches named by their rows.

A batch's id is a hash of its rows' ids, so the same rows always make the same id whatever
their position. Resume skips the batches the phase already trained in its current epoch: the
stream's order is fixed (the trainer's data config keeps the order and spreads blocks without
locality), and the ledger checks that claim, since a skipped batch that was not applied counts
as lost.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

import numpy as np

from ingest.batches import Batch, BatchId

TRAIN_DATASET = "train"


class StreamPosition(Protocol):
    """Where a phase stands in its stream (the students' checkpointed client state): the epoch and
    batch to go on from, and the ledger of the batches the stream delivered."""

    epoch: int
    next_batch: int
    delivered_ids: dict[str, None]

    def delivered(self, batch_id: str) -> None: ...  # the name of the students' dataset in the TorchTrainer's datasets


def rows_key(ids: Iterable[str]) -> str:
    """A short stable name for a set of rows in order (sha256 of their ids)."""
    return hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:20]


def stream_batch(epoch: int, index: int, rows: dict[str, np.ndarray],
                 token_sequences: bool = False) -> Batch:
    """A micro-batch of the stream: the columns `id`, `x`, `y`, and optionally `teacher_x` and
    `task` (what `orchestration.stream_data` writes). Token sequences (`token_sequences`) keep
    their packed integers (`ingest.token_layout`), and their labels are the next token at every
    target position."""
    ids = [str(i) for i in rows["id"]]
    writable = lambda a, dtype: np.require(a, dtype, ["C", "W"])  # noqa: E731 - Ray Data's arrays are read-only
    tokens = token_sequences or np.asarray(rows["x"]).dtype.kind in "iu"  # token ids stay integers
    x = writable(rows["x"], np.int64 if tokens else np.float32)
    teacher_x = writable(rows["teacher_x"], np.float32) if "teacher_x" in rows else x
    columns = {"task": np.asarray(rows["task"], dtype=np.int64)} if "task" in rows else {}
    if not token_sequences:
        y = writable(rows["y"], np.int64)
    else:
        from ingest.token_layout import target_labels

        y = target_labels(x)
    no_split_rows = np.full(len(ids), -1, dtype=np.int64)  # a stream has no row positions (its ids key a store)
    return Batch(BatchId.streamed(epoch, rows_key(ids)), epoch, index, x, y, no_split_rows, teacher_x, columns, np.asarray(ids))


class StreamedBatches:
    """The phase's batches from the stream (the interface of the in-memory plan in
    `students.train_loop`): each epoch is one pass over this worker's shard, in order.

    `read_epoch(epoch)` returns the shard's batches of one epoch (a dict of numpy columns per
    micro-batch). `remaining()` may be called once, by a soft-target source that requests
    ahead; the loop then reads the same batches through `epoch()`.
    """

    def __init__(self, read_epoch: Callable[[int], Iterable[dict[str, np.ndarray]]], epochs: int,
                 state: StreamPosition, token_sequences: bool = False):
        self.read_epoch, self.epochs, self.state = read_epoch, epochs, state
        self.token_sequences = token_sequences
        self.first_epoch, self.first_batch = state.epoch, state.next_batch
        self._loop: Optional[Iterator[Batch]] = None
        self._pending: Optional[Batch] = None

    def _batches(self) -> Iterator[Batch]:
        for epoch in range(self.first_epoch, self.epochs):
            skip = self.first_batch if epoch == self.first_epoch else 0
            for index, rows in enumerate(self.read_epoch(epoch)):
                batch = stream_batch(epoch, index, rows, self.token_sequences)
                self.state.delivered(batch.batch_id)
                if index >= skip:
                    yield batch

    def _stream(self) -> Iterator[Batch]:
        if self._loop is None:
            self._loop = self._batches()
        return self._loop

    def remaining(self) -> Iterator[Batch]:
        """Every batch left to train, lazily, for a source to request ahead; the loop reads the
        same batches from its own copy of the stream."""
        self._loop, ahead = itertools.tee(self._stream())
        return ahead

    def epoch(self, epoch: int) -> Iterator[Batch]:
        stream = self._stream()
        while True:
            batch = self._pending if self._pending is not None else next(stream, None)
            self._pending = None
            if batch is None:
                return
            if batch.epoch != epoch:  # the next epoch's first batch: kept for the next call
                self._pending = batch
                return
            yield batch

    def planned_ids(self) -> list[str]:
        """The batches the stream delivered to this worker (over the runs of the phase, resumed
        or not): the ledger's plan."""
        return list(self.state.delivered_ids)


class ShardReader:
    """One epoch of a Ray Data shard at a time as numpy micro-batches (`micro_batches`): Ray Data
    hands over chunks of `shuffle_rows` rows, so its per-batch cost is paid once per chunk, not
    once per micro-batch.

    The first epoch's read starts when the reader is made, in a background thread that waits for
    the first chunk: the stream's start (its split coordinator and read tasks, seconds on a busy
    node) overlaps what the worker does before its first step, such as building the engine."""

    def __init__(self, shard: Any, batch_size: int, seed: int, shuffle_rows: int):
        self.shard, self.batch_size, self.seed, self.shuffle_rows = shard, batch_size, seed, shuffle_rows
        self._started: Optional[StartedIterator] = StartedIterator(self._chunks())

    def _chunks(self) -> Iterable[dict[str, np.ndarray]]:
        return self.shard.iter_batches(batch_size=max(self.shuffle_rows, self.batch_size), batch_format="numpy",
                                       prefetch_batches=2)

    def __call__(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        chunks, self._started = self._started or self._chunks(), None
        return micro_batches(chunks, self.batch_size, np.random.default_rng([self.seed, epoch]),
                             shuffle=self.shuffle_rows > 1)


class StartedIterator:
    """An iterable whose first item is fetched at once in a background thread; iterating it
    waits for that item (re-raising what the fetch raised), then reads on in the caller's thread."""

    def __init__(self, iterable: Iterable[Any]):
        self._iterator = iter(iterable)
        self._first: list[Any] = []
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._fetch_first, name="stream-start", daemon=True)
        self._thread.start()

    def _fetch_first(self) -> None:
        try:
            self._first.append(next(self._iterator))
        except StopIteration:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the reader's thread
            self._error = error

    def __iter__(self) -> Iterator[Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._iterator


def micro_batches(chunks: Iterable[dict[str, np.ndarray]], batch_size: int, rng: np.random.Generator, *,
                  shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
    """Micro-batches of `batch_size` rows from chunks of columns, each chunk's rows shuffled by
    `rng` (when `shuffle`); the rows a chunk leaves over join the next chunk, and only the
    epoch's last, shorter micro-batch is dropped."""
    left: Optional[dict[str, np.ndarray]] = None
    for chunk in chunks:
        if left is not None:
            chunk = {name: np.concatenate([left[name], values]) for name, values in chunk.items()}
        rows = len(next(iter(chunk.values())))
        order = rng.permutation(rows) if shuffle else np.arange(rows)
        whole = rows // batch_size * batch_size
        for start in range(0, whole, batch_size):
            picked = order[start:start + batch_size]
            yield {name: values[picked] for name, values in chunk.items()}
        left = {name: values[order[whole:]] for name, values in chunk.items()}
