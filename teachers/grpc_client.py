"""Reach a teacher over gRPC: a standalone endpoint or Serve's gRPC ingress.

`GrpcTeacher` looks like a Serve handle to the TeacherClient: `remote(payload)` returns a
response with `result(timeout_s)` and `cancel()`. Every call has a deadline, failed calls
are retried a bounded number of times (only where a retry can help), and every payload that
comes back is decoded and validated as untrusted input.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

import grpc
import numpy as np

from teachers.arrow_codec import chunks, decode, encode_inputs, MAX_PAYLOAD_BYTES
from teachers.errors import SoftTargetDecodeError, SoftTargetError, TeacherAuthError, TeacherUnavailableError
from teachers.grpc_service import DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES, metadata_for
from teachers.proto import teacher_service_pb2 as pb, teacher_service_pb2_grpc as pb_grpc
from teachers.soft_targets import SoftTargets

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class EndpointSpec:
    """Where a gRPC teacher is and how to authenticate (plain data: travels to train workers).

    Args:
        url: `grpc://host:port` (plaintext, loopback only) or `grpcs://host:port` (TLS).
        token: bearer token the endpoint requires, if any.
        ca_pem: CA certificate that signed the server's certificate (TLS).
        cert_pem, key_pem: client certificate and key, when the endpoint requires them.
        application: Serve application name, when the endpoint is Serve's gRPC ingress.
        server_name: TLS name to check the certificate against, if not the URL's host.
    """

    url: str
    token: Optional[str] = None
    ca_pem: Optional[bytes] = None
    cert_pem: Optional[bytes] = None
    key_pem: Optional[bytes] = None
    application: Optional[str] = None
    server_name: Optional[str] = None

    @property
    def secure(self) -> bool:
        return parse_endpoint_url(self.url)[0]

    @property
    def target(self) -> str:
        return parse_endpoint_url(self.url)[1]

    def public(self) -> dict[str, Any]:
        """What may be shown (no token, no keys)."""
        return {"url": self.url, "application": self.application, "tls": self.secure,
                "token": bool(self.token), "client_certificate": bool(self.cert_pem)}


def parse_endpoint_url(url: str) -> tuple[bool, str]:
    """`grpc://host:port` -> (False, "host:port"); `grpcs://` -> TLS."""
    parsed = urlparse(url)
    if parsed.scheme not in ("grpc", "grpcs") or not parsed.hostname or not parsed.port:
        raise ValueError(f"endpoint {url!r}: expected grpc://host:port (plaintext) or grpcs://host:port (TLS)")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return parsed.scheme == "grpcs", f"{host}:{parsed.port}"


class _Cancel:
    """Cancellation shared by the attempts of one call: the flag and the gRPC call in flight."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.calls: list = []

    def cancel(self) -> None:
        self.event.set()
        for call in self.calls:
            call.cancel()


class _Call:
    """One in-flight SoftTargets call, answered by a worker thread."""

    def __init__(self, future: futures.Future, cancel: _Cancel):
        self._future = future
        self._cancel = cancel

    def result(self, timeout_s: Optional[float] = None) -> list[SoftTargets]:
        return self._future.result(timeout=timeout_s)

    def cancel(self) -> None:
        self._cancel.cancel()
        self._future.cancel()


class GrpcTeacher:
    """Args:
        spec: the endpoint.
        name: the teacher's name in this run (used in error messages).
        timeout_s: deadline of one call (all batches of one request).
        retries: further attempts after a call fails with UNAVAILABLE, RESOURCE_EXHAUSTED or
            DEADLINE_EXCEEDED (with backoff); other failures are not retried.
        temperature, top_k, dense_max_classes, target_kind: what the run asks of the teacher
            (0: its defaults; target_kind topk or sampled).
    """

    def __init__(self, spec: EndpointSpec, *, name: str = "", timeout_s: float = 60.0, retries: int = 2,
                 temperature: float = 0.0, top_k: int = 0, dense_max_classes: int = 0, target_kind: str = "topk",
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, max_in_flight: int = 4):
        self.spec = spec
        self.name = name or spec.url
        self.timeout_s = timeout_s
        self.retries = retries
        self.params = dict(temperature=temperature, top_k=top_k, dense_max_classes=dense_max_classes,
                           target_kind=target_kind)
        self.chunk_bytes = chunk_bytes
        self._metadata = metadata_for(spec.token, spec.application)
        self._channel = _open_channel(spec)
        self._stub = pb_grpc.TeacherServiceStub(self._channel)
        self._pool = futures.ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix=f"grpc-{self.name}")

    def describe(self) -> dict[str, Any]:
        info = self._with_retries(lambda: self._stub.Describe(pb.DescribeRequest(), timeout=self.timeout_s,
                                                              metadata=self._metadata), "Describe", _Cancel())
        return {"name": info.name, "model_version": info.model_version, "output_space": info.output_space,
                "num_classes": info.num_classes, "tokenizer_hash": info.tokenizer_hash,
                "schema_version": info.schema_version, "in_features": info.in_features,
                "parameters": info.parameters, "default_temperature": info.default_temperature}

    def remote(self, payload: dict[str, Any]) -> _Call:
        """Soft targets for `payload = {"batches": [{"batch_id", "inputs"}, ...]}`, one record per batch."""
        batches = [(b["batch_id"], np.asarray(b["inputs"])) for b in payload["batches"]]  # encode_inputs types them
        cancel = _Cancel()
        return _Call(self._pool.submit(self.soft_targets, batches, cancel), cancel)

    def soft_targets(self, batches: list[tuple[str, np.ndarray]], cancel: Optional[_Cancel] = None) -> list[SoftTargets]:
        cancel = cancel or _Cancel()
        return self._with_retries(lambda: self._stream(batches, cancel), "SoftTargets", cancel)

    def _requests(self, batches: list[tuple[str, np.ndarray]]) -> Iterator[pb.SoftTargetsRequest]:
        for batch_id, x in batches:
            parts = chunks(encode_inputs(x), self.chunk_bytes)
            for i, part in enumerate(parts):
                yield pb.SoftTargetsRequest(batch_id=batch_id, inputs_chunk=bytes(part),
                                            last_chunk=i == len(parts) - 1, **self.params)

    def _stream(self, batches: list[tuple[str, np.ndarray]], cancel: _Cancel) -> list[SoftTargets]:
        call = self._stub.SoftTargets(self._requests(batches), timeout=self.timeout_s, metadata=self._metadata)
        cancel.calls.append(call)
        if cancel.event.is_set():
            call.cancel()
        records, parts, size = [], [], 0
        expected = [batch_id for batch_id, _ in batches]
        for response in call:
            size += len(response.payload_chunk)
            if size > MAX_PAYLOAD_BYTES:
                call.cancel()
                raise SoftTargetDecodeError(f"teacher {self.name!r}: a record over {MAX_PAYLOAD_BYTES} bytes")
            parts.append(response.payload_chunk)
            if response.last_chunk:
                position = len(records)
                if position >= len(expected) or response.batch_id != expected[position]:
                    call.cancel()
                    raise SoftTargetError(f"teacher {self.name!r} answered batch {response.batch_id[:80]!r} "
                                          f"out of order (expected {expected[position:position + 1]})")
                records.append(decode(b"".join(parts), source=f"teacher {self.name!r}, batch {response.batch_id!r}"))
                parts, size = [], 0
        if len(records) != len(batches):
            raise TeacherUnavailableError(f"teacher {self.name!r} ended the stream after {len(records)} of "
                                          f"{len(batches)} batches")
        return records

    def _with_retries(self, attempt, what: str, cancel: _Cancel):
        for i in range(self.retries + 1):
            try:
                if cancel.event.is_set():
                    raise futures.CancelledError()
                return attempt()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise TeacherAuthError(f"teacher {self.name!r} at {self.spec.url} refused the call: "
                                           f"{exc.details()}; check the token file") from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise SoftTargetError(f"teacher {self.name!r} at {self.spec.url} refused the request: "
                                          f"{exc.details()}") from None
                if code not in RETRYABLE or i == self.retries or cancel.event.is_set():
                    raise TeacherUnavailableError(
                        f"teacher {self.name!r} at {self.spec.url}: {what} failed after {i + 1} attempt(s) "
                        f"({code.name if code else 'error'}: {exc.details() if hasattr(exc, 'details') else exc})"
                    ) from None
                time.sleep(min(0.2 * 2 ** i, 2.0))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._channel.close()


def _open_channel(spec: EndpointSpec) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    if spec.server_name:
        options.append(("grpc.ssl_target_name_override", spec.server_name))
    if not spec.secure:
        return grpc.insecure_channel(spec.target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=spec.ca_pem, private_key=spec.key_pem,
                                               certificate_chain=spec.cert_pem)
    return grpc.secure_channel(spec.target, credentials, options=options)
