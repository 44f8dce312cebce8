"""The standalone TeacherService on loopback: TLS, tokens, chunking, deadlines, bad input."""

import socket
import threading
import time

import grpc
import numpy as np
import pytest

from ingest.batches import Batch
from teachers.arrow_codec import encode_inputs
from teachers.errors import SoftTargetError, TeacherAuthError, TeacherUnavailableError
from teachers.grpc_client import EndpointSpec, GrpcTeacher, parse_endpoint_url
from teachers.grpc_service import ServerSecurity, start_teacher_server
from teachers.proto import teacher_service_pb2 as pb, teacher_service_pb2_grpc as pb_grpc
from teachers.tls import write_self_signed
from tests.unit.teacher_fixtures import IN_FEATURES, loaded_teacher

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return loaded_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(teacher, tls):
    security = ServerSecurity(token=TOKEN, cert_pem=tls.server_cert.read_bytes(), key_pem=tls.server_key.read_bytes(),
                              client_ca_pem=tls.ca_cert.read_bytes())
    server, port = start_teacher_server(teacher, host="127.0.0.1", port=0, security=security, chunk_bytes=4096)
    yield port
    server.stop(grace=None)


def client(port, tls, token=TOKEN, client_cert=True, **kwargs):
    spec = EndpointSpec(f"grpcs://127.0.0.1:{port}", token=token, ca_pem=tls.ca_cert.read_bytes(),
                        cert_pem=tls.client_cert.read_bytes() if client_cert else None,
                        key_pem=tls.client_key.read_bytes() if client_cert else None)
    return GrpcTeacher(spec, name="remote", timeout_s=kwargs.pop("timeout_s", 10), **kwargs)


def test_tls_and_token_accepted(tls_server, tls, teacher):
    remote = client(tls_server, tls, temperature=2.0, top_k=3, dense_max_classes=5)
    info = remote.describe()
    assert info["output_space"] == "classes:10" and info["model_version"] == teacher.version
    x = np.random.default_rng(0).random((300, IN_FEATURES), dtype=np.float32)  # inputs span many chunks
    records = remote.remote({"batches": [{"batch_id": "b0", "inputs": x[:100]},
                                         {"batch_id": "b1", "inputs": x[100:]}]}).result(timeout_s=10)
    assert [str(r.batch_id) for r in records] == ["b0", "b1"]
    assert records[1].topk_idx.shape == (200, 3) and records[1].temperature == 2.0
    local = teacher.records([Batch.of_inputs("b1", x[100:])], temperature=2.0, top_k=3, dense_max_classes=5)[0]
    assert np.array_equal(local.topk_idx, records[1].topk_idx)
    remote.close()


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_refused(tls_server, tls, token):
    remote = client(tls_server, tls, token=token)
    with pytest.raises(TeacherAuthError, match="missing|wrong bearer token"):
        remote.describe()
    with pytest.raises(TeacherAuthError):
        remote.remote({"batches": [{"batch_id": "b", "inputs": np.zeros((2, IN_FEATURES))}]}).result(10)
    remote.close()


def test_client_without_certificate_refused(tls_server, tls):
    remote = client(tls_server, tls, client_cert=False, retries=0, timeout_s=3)
    with pytest.raises(TeacherUnavailableError):
        remote.describe()
    remote.close()


def test_plaintext_only_on_loopback_and_only_when_asked(teacher):
    with pytest.raises(ValueError, match="only allowed on loopback"):
        start_teacher_server(teacher, host="0.0.0.0", port=0, security=ServerSecurity(insecure=True))
    with pytest.raises(ValueError, match="needs TLS"):
        start_teacher_server(teacher, host="127.0.0.1", port=0, security=ServerSecurity())


def test_bad_inputs_get_a_clear_error(teacher):
    server, port = start_teacher_server(teacher, host="127.0.0.1", port=0, security=ServerSecurity(insecure=True))
    try:
        stub = pb_grpc.TeacherServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        bad = [pb.SoftTargetsRequest(batch_id="b9", inputs_chunk=encode_inputs(np.zeros((2, 5))), last_chunk=True)]
        with pytest.raises(grpc.RpcError) as err:
            list(stub.SoftTargets(iter(bad), timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "b9" in err.value.details()
        garbage = [pb.SoftTargetsRequest(batch_id="b8", inputs_chunk=b"\x00garbage", last_chunk=True)]
        with pytest.raises(grpc.RpcError, match="not a valid Arrow"):
            list(stub.SoftTargets(iter(garbage), timeout=10))
        remote = GrpcTeacher(EndpointSpec(f"grpc://127.0.0.1:{port}"), name="plain")
        with pytest.raises(SoftTargetError, match="refused the request"):
            remote.soft_targets([("b7", np.full((2, IN_FEATURES), np.nan, dtype=np.float32))])
        remote.close()
    finally:
        server.stop(grace=None)


def test_hung_endpoint_hits_the_deadline():
    """A server that accepts connections and never answers: the call ends at its deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: [listener.accept() for _ in range(5)], daemon=True).start()
    remote = GrpcTeacher(EndpointSpec(f"grpc://127.0.0.1:{port}"), name="hung", timeout_s=0.5, retries=1)
    start = time.perf_counter()
    with pytest.raises(TeacherUnavailableError, match="after 2 attempt"):
        remote.remote({"batches": [{"batch_id": "b", "inputs": np.zeros((2, IN_FEATURES))}]}).result(timeout_s=10)
    assert time.perf_counter() - start < 5
    remote.close()
    listener.close()


@pytest.mark.parametrize("url", ["http://x:1", "grpc://host", "grpcs://:5"])
def test_bad_urls_refused(url):
    with pytest.raises(ValueError, match="expected grpc://"):
        parse_endpoint_url(url)


def test_the_run_ingress_is_refused_plaintext_off_loopback_and_without_a_token():
    from teachers.config import ServeConfig

    assert ServeConfig(grpc_port=9000, grpc_token_file="token.txt").grpc_host == "127.0.0.1"
    with pytest.raises(ValueError, match="is not loopback: plaintext gRPC is only allowed on loopback"):
        ServeConfig(grpc_port=9000, grpc_token_file="token.txt", grpc_host="0.0.0.0")
    tls = ServeConfig(grpc_port=9000, grpc_token_file="token.txt", grpc_host="0.0.0.0",
                      grpc_tls_cert_file="cert.pem", grpc_tls_key_file="key.pem")
    assert tls.grpc_host == "0.0.0.0"
    with pytest.raises(ValueError, match="go together"):
        ServeConfig(grpc_port=9000, grpc_token_file="token.txt", grpc_tls_cert_file="cert.pem")
    with pytest.raises(ValueError, match="grpc_token_file is required"):
        ServeConfig(grpc_port=9000)
