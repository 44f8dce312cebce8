"""A request's round trip is taken when its answer is first seen, not when its batch is read."""

import threading
import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from teachers.client import _Request


class _Response:
    """The interface of a Serve response (and of a gRPC call): result(timeout_s), cancel()."""

    def __init__(self, future: Future):
        self._future = future

    def result(self, timeout_s=None):
        return self._future.result(timeout=timeout_s)

    def cancel(self):
        self._future.cancel()


def _request(answer_after_s: float, answer=None, error=None) -> _Request:
    future = Future()
    batches = [SimpleNamespace(batch_id="b0"), SimpleNamespace(batch_id="b1")]
    request = _Request(_Response(future), batches)  # sent first: the answer cannot come before the send
    threading.Timer(answer_after_s, lambda: future.set_exception(error) if error else
                    future.set_result(answer or ["r0", "r1"])).start()
    return request


def test_poll_takes_the_round_trip_when_the_answer_arrives_and_reading_later_keeps_it():
    request = _request(0.05)
    assert not request.poll() and request.latency_s is None  # not answered yet
    time.sleep(0.15)
    assert request.poll()
    latency = request.latency_s
    assert latency >= 0.05
    time.sleep(0.5)  # the batch is read long after its answer arrived
    assert request.record("b1", timeout_s=1) == "r1" and request.record("b0", timeout_s=1) == "r0"
    assert request.latency_s == latency and not request.poll()


def test_a_blocking_read_takes_the_round_trip_when_it_returns():
    request = _request(0.05)
    assert request.record("b0", timeout_s=5) == "r0"
    assert request.latency_s >= 0.05


def test_a_failed_request_is_left_to_the_read_which_raises():
    request = _request(0.0, error=RuntimeError("replica died"))
    time.sleep(0.05)
    assert not request.poll() and request.latency_s is None
    with pytest.raises(RuntimeError, match="replica died"):
        request.record("b0", timeout_s=1)
