"""Concurrent requests to one teacher replica share a forward (plain asyncio; no Ray).

Requests that arrive while the replica is busy wait in arrival order; the next forward takes
the oldest request and every later one with the same key (the same settings and input shape:
requests that differ never share a forward) up to a budget of tokens. At most `concurrency`
groups are in flight: with two, one group's records are copied to the host while the next
group's forward runs. A group that fails is answered again request by request, so a bad
request fails alone and its neighbours still get their records.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

import numpy as np
from pydantic import Field

from cluster import Strict


class RequestBatchingConfig(Strict):
    """How a replica lets concurrent requests (several students, several batches in flight)
    share one forward (`RequestBatcher`). Requests with different settings (temperature, k,
    target kind) or input shapes never share one."""

    enabled: Optional[bool] = Field(None, description="share forwards; omitted: where the replica has a GPU (a CPU "
                                                      "forward is compute-bound: a larger one is no faster per "
                                                      "token, benchmarks/results/request_batching.md)")
    max_tokens: int = Field(16384, ge=1, description="the inputs of one shared forward: token positions (sequences x "
                                                     "length) for language models, rows otherwise; a larger "
                                                     "request runs alone")
    wait_ms: float = Field(0.0, ge=0, description="how long a request may wait for others to join its forward; 0: "
                                                  "only those already waiting join (no added latency)")

    def active(self, device: str) -> bool:
        """Whether a replica on `device` ("cpu", "cuda", ...) shares forwards."""
        return self.enabled if self.enabled is not None else not str(device).startswith("cpu")


@dataclass
class _Waiting:
    request: Any
    key: Hashable
    tokens: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class RequestBatcher:
    """`answer(requests) -> results` (one result per request, in order) runs in a worker
    thread for each group; `submit` returns one request's result.

    max_tokens: the budget of one group (a request over it runs alone).
    wait_s: how long the oldest waiting request may wait for others to join its group.
    """

    def __init__(self, answer: Callable[[list[Any]], list[Any]], *, max_tokens: int, wait_s: float = 0.0,
                 concurrency: int = 2):
        self.answer, self.max_tokens, self.wait_s, self.concurrency = answer, max_tokens, wait_s, concurrency
        self._waiting: list[_Waiting] = []
        self._collector: Optional[asyncio.Task] = None
        self._slots: Optional[asyncio.Semaphore] = None
        self.groups = 0  # forwards run, for logs and tests

    async def submit(self, request: Any, *, key: Hashable, tokens: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(request, key, tokens, future))
        if self._collector is None or self._collector.done():
            self._slots = self._slots or asyncio.Semaphore(self.concurrency)
            self._collector = asyncio.create_task(self._collect())
        return await future

    async def _collect(self) -> None:
        while self._waiting:
            await self._slots.acquire()
            delay = self._waiting[0].arrived + self.wait_s - time.monotonic()
            if delay > 0 and self._group_tokens() < self.max_tokens:
                await asyncio.sleep(delay)
            group = self._take_group()
            if not group:
                self._slots.release()
                continue
            self.groups += 1
            asyncio.create_task(self._run(group))

    def _group_tokens(self) -> int:
        return sum(w.tokens for w in self._waiting if w.key == self._waiting[0].key)

    def _take_group(self) -> list[_Waiting]:
        """The oldest live request and the later ones of its key that fit the budget."""
        self._waiting = [w for w in self._waiting if not w.future.done()]  # callers that gave up
        if not self._waiting:
            return []
        first, group, tokens, rest = self._waiting[0], [], 0, []
        for waiting in self._waiting:
            if waiting.key == first.key and (not group or tokens + waiting.tokens <= self.max_tokens):
                group.append(waiting)
                tokens += waiting.tokens
            else:
                rest.append(waiting)
        self._waiting = rest
        return group

    async def _run(self, group: list[_Waiting]) -> None:
        try:
            try:
                results = await asyncio.to_thread(self.answer, [w.request for w in group])
                outcomes = [(w, result, None) for w, result in zip(group, results)]
            except Exception as exc:  # noqa: BLE001 - answered again one by one below, or passed on
                outcomes = await self._one_by_one(group, exc)
            for waiting, result, error in outcomes:
                if waiting.future.done():
                    continue
                if error is None:
                    waiting.future.set_result(result)
                else:
                    waiting.future.set_exception(error)
        finally:
            self._slots.release()

    async def _one_by_one(self, group: list[_Waiting], error: Exception) -> list[tuple]:
        if len(group) == 1:
            return [(group[0], None, error)]
        outcomes = []
        for waiting in group:
            try:
                outcomes.append((waiting, (await asyncio.to_thread(self.answer, [waiting.request]))[0], None))
            except Exception as exc:  # noqa: BLE001 - this request's own failure, for its caller
                outcomes.append((waiting, None, exc))
        return outcomes


# A teacher's requests: (batches, settings) pairs, as a replica receives them.

def request_tokens(batches: list) -> int:
    """A request's size against the budget: token positions of token-id inputs, rows otherwise."""
    sizes = [np.asarray(b.teacher_x) for b in batches]
    return sum(x.size if x.dtype.kind in "iu" else len(x) for x in sizes)


def request_key(batches: list, settings: dict[str, Any]) -> Hashable:
    """What requests must share to share a forward: the record settings and the input row shape."""
    first = np.asarray(batches[0].teacher_x)
    return tuple(sorted(settings.items())), first.shape[1:], first.dtype.str


def records_together(records: Callable[..., list], requests: list[tuple[list, dict[str, Any]]]) -> list[list]:
    """One `records(batches, **settings)` call (one forward) for requests of one key, its
    records cut back into each request's."""
    batches = [batch for request_batches, _ in requests for batch in request_batches]
    answered = records(batches, **requests[0][1])
    bounds = np.cumsum([0] + [len(request_batches) for request_batches, _ in requests])
    return [answered[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
