"""Concurrent requests to one replica share forwards: each request gets exactly the records it
would get alone, groups stay within their budget, requests with different settings never share
a forward, and a failing request fails alone."""

import asyncio
from functools import partial

import numpy as np
import pytest

from ingest import Batch
from teachers.request_batching import RequestBatcher, records_together, request_key, request_tokens
from tests.unit.teacher_fixtures import IN_FEATURES, loaded_teacher


def _requests(students: int, per_student: int, rows: int, settings: list[dict]) -> list[tuple[list[Batch], dict]]:
    rng = np.random.default_rng(0)
    return [([Batch.of_inputs(f"run-{s}/e0/b{i}", rng.standard_normal((rows, IN_FEATURES)).astype(np.float32))],
             settings[(s * per_student + i) % len(settings)])
            for s in range(students) for i in range(per_student)]


def _answer_all(batcher: RequestBatcher, requests: list) -> list:
    async def main():
        return await asyncio.gather(*(batcher.submit(r, key=request_key(*r), tokens=request_tokens(r[0]))
                                      for r in requests), return_exceptions=True)
    return asyncio.run(main())


def test_shared_forwards_give_each_request_its_own_records(tmp_path):
    teacher = loaded_teacher(tmp_path, classes=3000)
    calls: list[tuple[int, dict]] = []

    def records(batches, **settings):
        calls.append((sum(len(b.teacher_x) for b in batches), settings))
        return teacher.records(batches, **settings)

    settings = [{"top_k": 8, "target_kind": "topk"}, {"top_k": 4, "target_kind": "sampled"}]
    requests = _requests(students=2, per_student=8, rows=6, settings=settings)
    batcher = RequestBatcher(partial(records_together, records), max_tokens=24, wait_s=0.05)
    answers = _answer_all(batcher, requests)
    assert len(calls) == batcher.groups < len(requests)  # forwards were shared
    assert all(rows <= 24 for rows, _ in calls)  # within the budget
    for (batches, request_settings), answer in zip(requests, answers):
        alone = teacher.records(batches, **request_settings)
        assert [r.batch_id for r in answer] == [b.batch_id for b in batches]
        assert answer[0].kind == request_settings["target_kind"]
        np.testing.assert_array_equal(answer[0].topk_idx, alone[0].topk_idx)
        np.testing.assert_array_equal(answer[0].topk_logprob, alone[0].topk_logprob)


def test_a_request_over_the_budget_runs_alone_and_a_failure_stays_with_its_request(tmp_path):
    teacher = loaded_teacher(tmp_path)

    def records(batches, **settings):
        if any("bad" in str(b.batch_id) for b in batches):
            raise ValueError("batch bad/e0/b0: inputs out of range")
        return teacher.records(batches, **settings)

    requests = _requests(students=1, per_student=5, rows=4, settings=[{}])
    rng = np.random.default_rng(1)
    requests.insert(2, ([Batch.of_inputs("bad/e0/b0", rng.standard_normal((4, IN_FEATURES)).astype(np.float32))], {}))
    requests.append(([Batch.of_inputs("big/e0/b0", rng.standard_normal((40, IN_FEATURES)).astype(np.float32))], {}))
    batcher = RequestBatcher(partial(records_together, records), max_tokens=16, wait_s=0.05)
    answers = _answer_all(batcher, requests)
    assert isinstance(answers[2], ValueError) and "bad/e0/b0" in str(answers[2])
    assert all(isinstance(a, list) and len(a) == 1 for i, a in enumerate(answers) if i != 2)
    assert answers[-1][0].batch_size == 40


@pytest.mark.parametrize("wait_s", [0.0, 0.02])
def test_one_request_alone_is_answered_at_once(tmp_path, wait_s):
    teacher = loaded_teacher(tmp_path)
    batcher = RequestBatcher(partial(records_together, teacher.records), max_tokens=1024, wait_s=wait_s)
    (answer,) = _answer_all(batcher, _requests(students=1, per_student=1, rows=3, settings=[{}]))
    assert answer[0].batch_size == 3 and batcher.groups == 1
