"""`distill.on_teacher_lost: wait` against a real gRPC teacher on loopback that goes away and
comes back on the same port: the batch waits for it, nobody is dropped, and a teacher that
stays away past `pause_timeout_s` fails the run with what to do."""

import threading
import time

import numpy as np
import pytest

from ingest.batches import Batch
from students.run_control import LocalRunControl
from teachers.client import FaultPolicy, TeacherClient
from teachers.errors import TeacherUnavailableError
from teachers.grpc_client import EndpointSpec
from teachers.grpc_service import ServerSecurity, start_teacher_server
from teachers.teacher_set import TeacherEntry, TeacherSet
from tests.conftest import free_port
from tests.unit.teacher_fixtures import IN_FEATURES, loaded_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return loaded_teacher(tmp_path_factory.mktemp("teacher"))


def _serve(teacher, port):
    server, bound = start_teacher_server(teacher, host="127.0.0.1", port=port, security=ServerSecurity(insecure=True))
    assert bound == port
    return server


def _client(teacher, port, pause_timeout_s):
    entry = TeacherEntry("remote", 1.0, teacher.output_space, teacher.num_classes, teacher.version,
                         endpoint=EndpointSpec(f"grpc://127.0.0.1:{port}"))
    control = LocalRunControl(TeacherSet().with_teacher(entry))
    policy = FaultPolicy(retries=1, on_teacher_lost="wait", pause_timeout_s=pause_timeout_s)
    client = TeacherClient(control, output_space=teacher.output_space, temperature=2.0, prefetch=2,
                           batches_per_request=1, timeout_s=1.0, dense_max_classes=16, policy=policy)
    return client, control


def _batches(n):
    rng = np.random.default_rng(0)
    return [Batch.of_inputs(f"b{i}", rng.random((4, IN_FEATURES), dtype=np.float32)) for i in range(n)]


def test_a_teacher_that_comes_back_is_waited_for_and_kept(teacher):
    port = free_port()
    server = _serve(teacher, port)
    client, control = _client(teacher, port, pause_timeout_s=60)
    batches = _batches(3)
    client.plan(batches)
    try:
        assert str(client.targets_for(batches[0]).records["remote"].batch_id) == "b0"
        server.stop(grace=None).wait()
        restarted = []
        threading.Timer(4.0, lambda: restarted.append(_serve(teacher, port))).start()
        start = time.monotonic()
        for batch in batches[1:]:
            record = client.targets_for(batch).records["remote"]
            assert record.batch_id == batch.batch_id and record.teacher_version == teacher.version
        assert time.monotonic() - start > 3.5  # it waited for the restart, it did not go on without it
        assert client.faults["teachers_waited_for"] == 1 and client.faults["teachers_lost"] == 0
        assert "remote" in control.teacher_set().teachers
    finally:
        client.close()
        for s in restarted:
            s.stop(grace=None)


def test_a_teacher_away_past_the_pause_timeout_fails_the_run(teacher):
    port = free_port()
    _serve(teacher, port).stop(grace=None).wait()
    client, control = _client(teacher, port, pause_timeout_s=3)
    batch = _batches(1)[0]
    client.plan([batch])
    start = time.monotonic()
    with pytest.raises(TeacherUnavailableError, match="pause_timeout_s .3s. with distill.on_teacher_lost: wait"):
        client.targets_for(batch)
    assert 3 <= time.monotonic() - start < 20
    assert "remote" in control.teacher_set().teachers  # waited for, never dropped
    client.close()
