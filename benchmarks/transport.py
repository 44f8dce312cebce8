"""Soft-target transport, measured side by side in one run.

    python -m benchmarks.transport [--repeats 5] [--fuzz-cases 10000]

1. Bytes on the wire per sample for output spaces 10 / 32,000 / 128,256 / 151,936 and k in
   {8, 64, 128}, against the ideal payload k*(4+2) bytes + a 4-byte tail (int32 index,
   float16 log-prob, float32 tail log-mass), for 4,096-row batches (and 64-row batches, where
   the fixed cost of schema and framing shows).
2. Encode and decode throughput of the Arrow codec (decode includes every validation check).
3. 16 MiB of soft targets through a gRPC SoftTargets stream against a raw loopback TCP socket
   moving the same bytes.
4. One batch's round trip through a Serve handle, the run's gRPC ingress and the standalone
   endpoint (the same teacher behind all three).
5. The decoder fuzzed with malformed payloads in a child process (a crash would be counted).

Results: `benchmarks/results/transport.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Callable

import numpy as np

from cluster.ray_env import prepare_ray_env

prepare_ray_env()

from benchmarks.machine import describe_machine  # noqa: E402
from teachers.arrow_codec import chunks, decode, encode  # noqa: E402
from teachers.grpc_service import DEFAULT_CHUNK_BYTES  # noqa: E402
from teachers.proto import teacher_service_pb2 as pb  # noqa: E402
from teachers.soft_targets import SoftTargets  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPACES = [10, 32_000, 128_256, 151_936]
KS = [8, 64, 128]
STREAM_BYTES = 16 << 20
SERVICE = pb.DESCRIPTOR.services_by_name["TeacherService"].full_name


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_topk(rows: int, classes: int, k: int, seed: int = 0) -> SoftTargets:
    """A valid top-k record without materialising [rows, classes] logits."""
    rng = np.random.default_rng(seed)
    k = min(k, classes)
    idx = np.stack([rng.choice(classes, size=k, replace=False) for _ in range(min(rows, 64))]).astype(np.int32)
    idx = np.resize(idx, (rows, k))
    z = rng.normal(size=(rows, k))
    top = np.sort(z - np.log(np.exp(z).sum(-1, keepdims=True)), axis=-1)[:, ::-1] + np.log(0.9)
    tail = np.full(rows, np.log(0.1) if k < classes else -27.6, dtype=np.float32)
    if k == classes:
        top = top - np.log(0.9)
    return SoftTargets(batch_id="e0-s0-b0", teacher="teacher", teacher_version="0123456789ab", temperature=2.0,
                       output_space=f"vocab:{classes}", num_classes=classes, topk_idx=idx,
                       topk_logprob=top.astype(np.float16), tail_logprob=tail)


def wire_bytes(record: SoftTargets) -> int:
    """Every byte of the response messages that carry `record` (Arrow IPC + protobuf framing)."""
    parts = chunks(encode(record), DEFAULT_CHUNK_BYTES)
    return sum(pb.SoftTargetsResponse(batch_id=record.batch_id, payload_chunk=bytes(p),
                                      last_chunk=i == len(parts) - 1).ByteSize() + 5  # + gRPC frame header
               for i, p in enumerate(parts))


def bytes_table() -> list[dict]:
    out = []
    for classes in SPACES:
        for k in sorted({min(k, classes) for k in KS}):
            for rows in (64, 4096):
                record = synthetic_topk(rows, classes, k)
                k_eff = record.topk_idx.shape[1]
                ideal = rows * (k_eff * 6 + 4)
                wire = wire_bytes(record)
                out.append({"output_space": classes, "k": k_eff, "rows": rows, "bytes_per_row": wire / rows,
                            "ideal_per_row": ideal / rows, "ratio": wire / ideal,
                            "dense_fp16_per_row": classes * 2})
    return out


def codec_throughput(repeats: int) -> list[dict]:
    out = []
    for classes, k in [(151_936, 64), (32_000, 128), (10, 8)]:
        record = synthetic_topk(4096, classes, k)
        payload = encode(record)
        enc = median_time(lambda: encode(record), repeats * 4)
        dec = median_time(lambda: decode(payload), repeats * 4)
        out.append({"output_space": classes, "k": record.topk_idx.shape[1], "rows": 4096, "bytes": len(payload),
                    "encode_GBps": len(payload) / enc / 1e9, "decode_GBps": len(payload) / dec / 1e9})
    return out


# --- 3. gRPC stream vs raw socket --------------------------------------------------------------
# Each server runs in its own process, as a teacher does; the client reads the stream the way
# GrpcTeacher does (generated stub, chunks joined into one payload).

def _stream_payload() -> bytes:
    return encode(synthetic_topk(STREAM_BYTES // (64 * 6 + 4), 151_936, 64))


def _serve_grpc_stream(chunk_bytes: int, preserialized: bool, ports) -> None:
    """A SoftTargets server streaming `_stream_payload()`; `preserialized` sends ready-made message
    bytes (no protobuf work on the server: the transport's own floor)."""
    import grpc

    from teachers.grpc_service import MAX_MESSAGE_BYTES

    parts = [bytes(p) for p in chunks(_stream_payload(), chunk_bytes)]
    messages = [pb.SoftTargetsResponse(batch_id="b", payload_chunk=part, last_chunk=i == len(parts) - 1)
                for i, part in enumerate(parts)]
    ready = [m.SerializeToString() for m in messages]

    def soft_targets(request_iterator, context):
        for _ in request_iterator:
            yield from (ready if preserialized else messages)

    handler = grpc.stream_stream_rpc_method_handler(
        soft_targets, request_deserializer=pb.SoftTargetsRequest.FromString,
        response_serializer=None if preserialized else pb.SoftTargetsResponse.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"SoftTargets": handler}),))
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def _serve_socket(ports) -> None:
    payload = _stream_payload()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ports.put(listener.getsockname()[1])
    conn, _ = listener.accept()
    while conn.recv(1):  # one byte asks for the payload again
        conn.sendall(payload)


def _in_child(target, *args):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, ports), daemon=True)
    proc.start()
    return proc, ports.get(timeout=120)


def grpc_vs_socket(repeats: int) -> dict:
    import grpc

    from teachers.grpc_service import MAX_MESSAGE_BYTES
    from teachers.proto import teacher_service_pb2_grpc as pb_grpc

    size = len(_stream_payload())
    request = pb.SoftTargetsRequest(batch_id="b", last_chunk=True)
    result = {"payload_bytes": size, "GBps": {}}

    proc, port = _in_child(_serve_socket)
    buf = bytearray(size)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        def pull_socket() -> None:
            conn.sendall(b"x")
            got = 0
            while got < size:
                got += conn.recv_into(view[got:], min(1 << 20, size - got))

        pull_socket()
        result["GBps"]["raw TCP socket into one buffer"] = size / median_time(pull_socket, repeats) / 1e9
    proc.kill()

    variants = [(f"gRPC SoftTargets stream, {c >> 10} KiB chunks", c, False) for c in (DEFAULT_CHUNK_BYTES, 3 << 20)]
    variants.append(("gRPC floor: pre-serialized messages, client reads raw bytes, 1024 KiB chunks",
                     DEFAULT_CHUNK_BYTES, True))
    for name, chunk_bytes, floor in variants:
        proc, port = _in_child(_serve_grpc_stream, chunk_bytes, floor)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        stub = pb_grpc.TeacherServiceStub(channel)
        raw_call = channel.stream_stream(f"/{SERVICE}/SoftTargets",
                                         request_serializer=pb.SoftTargetsRequest.SerializeToString)

        def pull() -> None:
            if floor:
                received = sum(len(m) for m in raw_call(iter([request]), timeout=60))
                assert received >= size
            else:
                assert len(b"".join(r.payload_chunk for r in stub.SoftTargets(iter([request]), timeout=60))) == size

        pull()
        result["GBps"][name] = size / median_time(pull, repeats) / 1e9
        channel.close()
        proc.kill()
    raw = result["GBps"]["raw TCP socket into one buffer"]
    used = result["GBps"][f"gRPC SoftTargets stream, {DEFAULT_CHUNK_BYTES >> 10} KiB chunks"]
    result["ratio_default_chunks_to_socket"] = used / raw
    return result


# --- 4. one batch through Serve handle / the run's gRPC ingress / standalone endpoint ---------------

def round_trips(repeats: int, folder: Path) -> dict:
    import ray
    import torch
    from ray import serve
    from ray.serve.config import ProxyLocation
    from safetensors.torch import save_file

    from teachers.backend import ResolvedModel
    from teachers.deployment import build_teacher_app
    from teachers.grpc_client import EndpointSpec, GrpcTeacher
    from teachers.grpc_service import ServerSecurity, start_teacher_server, token_digest
    from teachers.ingress import RunIngress
    from teachers.loaded import LoadedTeacher, TeacherAppArgs

    model = ResolvedModel("models.zoo:mlp", {"in_features": 64, "num_classes": 10, "hidden": [512, 256]})
    torch.manual_seed(0)
    weights = folder / "teacher.safetensors"
    save_file(model.build().state_dict(), str(weights))
    token = "benchmark-token"
    args = TeacherAppArgs(name="bench", factory=model.factory, kwargs=model.kwargs,
                          allowed_modules=list(model.allowed_modules), weights_path=str(weights), in_features=64,
                          temperature=4.0)
    ray.init(namespace="distillery-bench", _node_ip_address="127.0.0.1")
    try:
        serve.start(proxy_location=ProxyLocation.Disabled)
        handle = serve.run(build_teacher_app(args), name="teacher-bench", route_prefix=None)
        run_ingress = RunIngress("bench", lambda: {"bench": args}, host="127.0.0.1", port=0,
                                 token_sha256=token_digest(token))
        server, port = start_teacher_server(LoadedTeacher.load(args), host="127.0.0.1", port=0,
                                            security=ServerSecurity(token=token, insecure=True))
        ingress = GrpcTeacher(EndpointSpec(run_ingress.address, token=token, application="teacher-bench"),
                              name="ingress")
        standalone = GrpcTeacher(EndpointSpec(f"grpc://127.0.0.1:{port}", token=token), name="standalone")
        x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
        payload = {"batches": [{"batch_id": "b", "inputs": x}]}
        paths = {"Serve handle": lambda: handle.remote(payload).result(timeout_s=30),
                 "run's gRPC ingress (Serve handle behind it)": lambda: ingress.soft_targets([("b", x)]),
                 "standalone gRPC endpoint": lambda: standalone.soft_targets([("b", x)])}
        out = {}
        for name, call in paths.items():
            for _ in range(5):
                call()  # warm up connections and replicas
            out[name] = median_time(call, repeats * 10) * 1000
        ingress.close()
        run_ingress.stop()
        standalone.close()
        server.stop(None)
        return {"batch_rows": 64, "median_ms": out}
    finally:
        serve.shutdown()
        ray.shutdown()


def fuzz(cases: int, timeout_s: float = 1800) -> dict:
    """Run the fuzz cases in a child process: a crash there is a finding, not the end of this
    run; so is a child still running after `timeout_s` (a hang). The child reports its peak
    resident memory before and after the cases (bounded memory: the growth stays small)."""
    code = ("import json, resource; from benchmarks.fuzz import run_cases, seed_payloads; seed_payloads(); "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"result = run_cases({cases}, seed=7); "
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "print(json.dumps({**result, 'peak_rss_mib': after / 1024, 'rss_growth_mib': (after - before) / 1024}))")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s,
                              cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return {"cases": cases, "hung": True, "crashed": False, "seconds": time.perf_counter() - start}
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"cases": cases}
    result.update({"child_exit_code": proc.returncode, "crashed": proc.returncode != 0, "hung": False,
                   "seconds": time.perf_counter() - start})
    return result


def render(result: dict) -> str:
    lines = [f"# Soft-target transport ({result['machine']})", "",
             f"`python -m benchmarks.transport --repeats {result['repeats']} --fuzz-cases {result['fuzz']['cases']}`; "
             "medians of repeats, all measured in one run.", "",
             "## Bytes on the wire per row (Arrow IPC + protobuf framing) vs the ideal k*(4+2)+4", "",
             "| output space | k | rows/batch | bytes/row | ideal | ratio | dense fp16 bytes/row |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["bytes"]:
        lines.append(f"| {r['output_space']:,} | {r['k']} | {r['rows']:,} | {r['bytes_per_row']:.1f} | "
                     f"{r['ideal_per_row']:.0f} | {r['ratio']:.4f} | {r['dense_fp16_per_row']:,} |")
    lines += ["", "## Codec throughput (4,096 rows; decode includes validation)", "",
              "| output space | k | payload | encode GB/s | decode GB/s |", "|---:|---:|---:|---:|---:|"]
    for r in result["codec"]:
        lines.append(f"| {r['output_space']:,} | {r['k']} | {r['bytes'] / 1e6:.2f} MB | {r['encode_GBps']:.2f} | "
                     f"{r['decode_GBps']:.2f} |")
    s = result["stream"]
    raw = s["GBps"]["raw TCP socket into one buffer"]
    lines += ["", f"## {s['payload_bytes'] / 2**20:.1f} MiB of soft targets from a server process: gRPC vs raw "
              "loopback socket", "", "| path | GB/s | vs raw socket |", "|---|---:|---:|"]
    lines += [f"| {name} | {gbps:.2f} | {gbps / raw:.2f} |" for name, gbps in s["GBps"].items()]
    rt = result["round_trip"]
    lines += ["", f"## One batch ({rt['batch_rows']} rows) round trip, same teacher behind each path", "",
              "| path | median ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in rt["median_ms"].items()]
    f = result["fuzz"]
    lines += ["", "## Decoder fuzzing (truncations, bit flips, absurd lengths, insertions, garbage)", "",
              f"{f['cases']:,} cases: {f.get('refused', '?'):,} refused with SoftTargetDecodeError, "
              f"{f.get('accepted', '?'):,} still valid records, {f.get('failed', '?')} other exceptions, "
              f"child process crashed: {f['crashed']}, slowest case {f.get('slowest_case_s', 0) * 1000:.1f} ms."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fuzz-cases", type=int, default=10_000)
    opts = parser.parse_args()
    result = {"machine": describe_machine(), "repeats": opts.repeats}
    print("bytes on the wire...", flush=True)
    result["bytes"] = bytes_table()
    print("codec throughput...", flush=True)
    result["codec"] = codec_throughput(opts.repeats)
    print("gRPC stream vs raw socket...", flush=True)
    result["stream"] = grpc_vs_socket(opts.repeats)
    print("round trips (starts a local Ray + Serve)...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["round_trip"] = round_trips(opts.repeats, Path(tmp))
    print(f"fuzzing {opts.fuzz_cases} cases...", flush=True)
    result["fuzz"] = fuzz(opts.fuzz_cases)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transport.json").write_text(json.dumps(result, indent=2))
    text = render(result)
    (RESULTS / "transport.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
