"""The TeacherService (teachers/proto/teacher_service.proto) on the teacher's side.

`SoftTargetResponder` turns request messages into response messages for one teacher: a
teacher loaded in this process (`distillery teacher serve`), or a run's Serve app reached by
its handle (the run's gRPC ingress, `teachers.ingress`). Both servers are started by
`start_grpc_server` with the same rules (plaintext only on loopback, a token off loopback), so
both speak exactly the same protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import socket
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

import grpc

from ingest import Batch, BatchId
from teachers.arrow_codec import MAX_PAYLOAD_BYTES, chunks, decode_inputs, encode
from teachers.errors import SoftTargetDecodeError
from teachers.loaded import LoadedTeacher
from teachers.proto import teacher_service_pb2 as pb, teacher_service_pb2_grpc as pb_grpc
from teachers.soft_targets import SCHEMA_VERSION, TARGET_KINDS

logger = logging.getLogger(__name__)

# gRPC refuses messages over 4 MiB by default; payloads travel in chunks well below that.
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 4 << 20
MAX_TOP_K = 1 << 16


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_problem(metadata: Iterable[tuple[str, str]], digest: Optional[str]) -> Optional[str]:
    """Why the call's `authorization: Bearer <token>` metadata is refused (None: accepted)."""
    if digest is None:
        return None
    values = [v for k, v in metadata if k.lower() == "authorization"]
    if not values:
        return "missing 'authorization: Bearer <token>' metadata"
    value = values[0] if isinstance(values[0], str) else values[0].decode(errors="replace")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token_digest(token.strip()), digest):
        return "wrong bearer token"
    return None


class AnsweringTeacher(Protocol):
    """What a responder answers for: a `LoadedTeacher`, or a Serve app behind its handle."""

    args: Any  # TeacherAppArgs: name, in_features and the default settings

    @property
    def vocab_size(self) -> Optional[int]: ...

    def describe(self) -> dict[str, Any]: ...

    def records(self, batches: list[Batch], **settings: Any) -> list: ...


class SoftTargetResponder:
    """Answers SoftTargets request streams for one teacher.

    Each batch arrives as one or more request messages (`last_chunk` on the final one); its
    Arrow inputs are checked like any untrusted payload, then answered with the soft-target
    record, also chunked.
    """

    def __init__(self, teacher: AnsweringTeacher, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.teacher = teacher
        self.chunk_bytes = chunk_bytes
        self._parts: list[bytes] = []
        self._size = 0

    def describe(self) -> pb.DescribeResponse:
        info = self.teacher.describe()
        return pb.DescribeResponse(name=info["name"], model_version=info["model_version"],
                                   output_space=info["output_space"], num_classes=info["num_classes"],
                                   tokenizer_hash=info["tokenizer_hash"], schema_version=SCHEMA_VERSION,
                                   in_features=self.teacher.args.in_features, parameters=info["parameters"],
                                   default_temperature=self.teacher.args.temperature)

    def feed(self, request: pb.SoftTargetsRequest) -> list[pb.SoftTargetsResponse]:
        """Take one request message; return the responses of the batch it completes (or none)."""
        self._size += len(request.inputs_chunk)
        if self._size > MAX_PAYLOAD_BYTES:
            raise SoftTargetDecodeError(f"batch {request.batch_id[:80]!r}: inputs exceed {MAX_PAYLOAD_BYTES} bytes")
        self._parts.append(request.inputs_chunk)
        if not request.last_chunk:
            return []
        payload, self._parts, self._size = b"".join(self._parts), [], 0
        return self._answer(request, payload)

    def _answer(self, request: pb.SoftTargetsRequest, payload: bytes) -> list[pb.SoftTargetsResponse]:
        args = self.teacher.args
        source = f"inputs of batch {request.batch_id[:80]!r}"
        temperature = request.temperature or args.temperature
        top_k = request.top_k or args.top_k
        dense_max = request.dense_max_classes or args.dense_max_classes
        kind = request.target_kind or "topk"
        if not (math.isfinite(temperature) and temperature > 0 and 0 < top_k <= MAX_TOP_K and dense_max > 0):
            raise SoftTargetDecodeError(f"{source}: temperature {temperature}, top_k {top_k}, dense_max_classes "
                                        f"{dense_max} must be positive (top_k at most {MAX_TOP_K})")
        if kind not in TARGET_KINDS:
            raise SoftTargetDecodeError(f"{source}: target_kind {kind[:20]!r} is not one of {', '.join(TARGET_KINDS)}")
        x = decode_inputs(payload, in_features=args.in_features, source=source, vocab_size=self.teacher.vocab_size)
        record = self.teacher.records([Batch.of_inputs(BatchId.parse(request.batch_id), x)], temperature=temperature, top_k=top_k,
                                      dense_max_classes=dense_max, target_kind=kind)[0]
        parts = chunks(encode(record), self.chunk_bytes)
        return [pb.SoftTargetsResponse(batch_id=request.batch_id, payload_chunk=bytes(part),
                                       last_chunk=i == len(parts) - 1) for i, part in enumerate(parts)]


class TeacherNotFound(LookupError):
    """The call named no teacher this server answers for (the message says which it has)."""


TeacherRouter = Callable[[Sequence[tuple[str, Any]]], AnsweringTeacher]  # call metadata -> its teacher


class TeacherServicer(pb_grpc.TeacherServiceServicer):
    """TeacherService over the teachers `route` finds from each call's metadata; every call
    must carry the bearer token whose digest is `token_sha256` (None: no token asked)."""

    def __init__(self, route: TeacherRouter, token_sha256: Optional[str], chunk_bytes: int, what: str):
        self.route = route
        self.token_sha256 = token_sha256
        self.chunk_bytes = chunk_bytes
        self.what = what

    def _teacher(self, context: grpc.ServicerContext) -> AnsweringTeacher:
        metadata = context.invocation_metadata()
        problem = token_problem(metadata, self.token_sha256)
        if problem:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{self.what}: {problem}")
        try:
            return self.route(metadata)
        except TeacherNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{self.what}: {exc}")

    def Describe(self, request, context):
        return SoftTargetResponder(self._teacher(context)).describe()

    def SoftTargets(self, request_iterator, context) -> Iterator[pb.SoftTargetsResponse]:
        responder = SoftTargetResponder(self._teacher(context), self.chunk_bytes)
        try:
            for request in request_iterator:
                yield from responder.feed(request)
        except SoftTargetDecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


@dataclass(frozen=True)
class ServerSecurity:
    """How the endpoint is protected. Plaintext (`insecure`) is only allowed on loopback."""

    token: Optional[str] = None
    cert_pem: Optional[bytes] = None
    key_pem: Optional[bytes] = None
    client_ca_pem: Optional[bytes] = None
    insecure: bool = False


def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, ValueError):
        return False


def start_teacher_server(teacher: LoadedTeacher, *, host: str, port: int, security: ServerSecurity,
                         chunk_bytes: int = DEFAULT_CHUNK_BYTES, max_workers: int = 8) -> tuple[grpc.Server, int]:
    """Start a standalone TeacherService; return the server and the port it listens on."""
    digest = token_digest(security.token) if security.token else None
    servicer = TeacherServicer(lambda metadata: teacher, digest, chunk_bytes, f"teacher {teacher.args.name!r}")
    return start_grpc_server(servicer, host=host, port=port, security=security, max_workers=max_workers,
                             what=f"teacher {teacher.args.name}")


def start_grpc_server(servicer: TeacherServicer, *, host: str, port: int, security: ServerSecurity,
                      max_workers: int = 8, what: str = "TeacherService") -> tuple[grpc.Server, int]:
    """Serve `servicer` on `host:port` only (port 0: any free one) under `security`'s rules:
    plaintext only on loopback, a bearer token wherever the address is not loopback. Return
    the server and the port it listens on."""
    if security.insecure:
        if security.cert_pem:
            raise ValueError("choose either TLS (a certificate and key) or --insecure, not both")
        if not is_loopback(host):
            raise ValueError(f"plaintext gRPC is only allowed on loopback, not on {host!r}: give a TLS "
                             f"certificate and key, or bind to 127.0.0.1")
    elif not (security.cert_pem and security.key_pem):
        raise ValueError("a teacher endpoint needs TLS (certificate and key files); for a loopback-only "
                         "endpoint without TLS pass --insecure explicitly")
    if servicer.token_sha256 is None and not is_loopback(host):
        raise ValueError(f"an endpoint on {host!r} must require a bearer token (give a token file)")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.so_reuseport", 0)])  # a second server on a port in use fails, never shares it
    pb_grpc.add_TeacherServiceServicer_to_server(servicer, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if security.insecure:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(security.key_pem, security.cert_pem)], root_certificates=security.client_ca_pem,
            require_client_auth=security.client_ca_pem is not None)
        bound = server.add_secure_port(address, credentials)
    if not bound:
        raise OSError(f"could not listen on {address}: is the port in use?")
    server.start()
    logger.info("%s serving on %s (%s)", what, address, "plaintext" if security.insecure else "TLS")
    return server, bound


def metadata_for(token: Optional[str], application: Optional[str]) -> Sequence[tuple[str, str]]:
    """Call metadata a client sends: its bearer token and, for Serve's ingress, the application."""
    out = []
    if token:
        out.append(("authorization", f"Bearer {token}"))
    if application:
        out.append(("application", application))
    return tuple(out)
