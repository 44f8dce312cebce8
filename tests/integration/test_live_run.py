"""A real run on the session's Ray cluster: Serve teachers, 2 Train workers, DeepSpeed ZeRO-3 with
the optimizer offloaded to host memory.

The run is cross-modal (teachers read images, the student ink profiles) and merges its teachers
per sample by label agreement. While it trains, the CLI lists its teachers and changes their
set and weights, a plain gRPC client calls its teachers through the run's gRPC ingress, and a
standalone gRPC teacher joins and leaves it; at the end it is stopped with `distillery stop`,
and must have written its results and metrics and deleted its Serve apps. Serve was started
before the run, by someone else, with an HTTP proxy: no teacher is reachable through it, and
the ingress listens on loopback only. The tests run in file order on one run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from teachers.arrow_codec import decode, encode_inputs
from teachers.proto import teacher_service_pb2 as pb, teacher_service_pb2_grpc as pb_grpc
from teachers.soft_targets import SCHEMA_VERSION
from tests.conftest import CONFIGS, REPO, Background, RunProcess, distillery, free_port, terminal_env

pytestmark = pytest.mark.integration
INGRESS_TOKEN = "ingress-token-for-tests"


@pytest.fixture(scope="module")
def live(ray_cluster, tmp_path_factory):
    from ray import serve

    serve.shutdown()
    http_port = free_port()  # "whatever started Serve first": here, a caller with an HTTP proxy on
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    folder = tmp_path_factory.mktemp("runs")
    (folder / "ingress.token").write_text(INGRESS_TOKEN)
    port = free_port()
    run = RunProcess(CONFIGS / "live.yaml", "live", folder,
                     ("--set", f"serve.grpc_port={port}", "--set", f"serve.grpc_token_file={folder / 'ingress.token'}"))
    run.grpc_port, run.http_port = port, http_port
    yield run
    if run.proc.poll() is None:
        run.kill()


def rank_records(run: RunProcess, phase: str = "kd-seed0"):
    return [r for r in run.metrics() if r.get("phase") == phase and "teacher_set/version" in r]


def latest_by_rank(run: RunProcess):
    latest = {}
    for record in rank_records(run):
        latest[record["rank"]] = record
    return latest


def test_status_and_teacher_list(live):
    live.wait_for(lambda: len(latest_by_rank(live)) == 2, "both workers training with teachers")
    status = distillery("status", "--run", "live", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["phase"] == "kd-seed0"
    assert set(info["teachers"]) == {"mlp", "cnn"} and info["teacher_set_version"] == 2
    assert all(teacher["replicas"] >= 1 for teacher in info["teachers"].values())  # from Serve's status
    listed = distillery("teacher", "list", "--run", "live", "--json")
    assert json.loads(listed.stdout)["teachers"]["cnn"]["output_space"] == "classes:10"


def test_status_watch_draws_a_live_view_in_a_real_terminal(live, tmp_path):
    """`distillery status --watch` in a tmux pane: the screen shows the students, the teachers
    with their wait and requests in flight, and refreshes as the steps advance."""
    session = f"watch-{os.getpid()}"
    command = f"{sys.executable} -m orchestration status --run live --watch --interval 0.5"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "180", "-y", "50", "-c", str(REPO),
                    *terminal_env(), f"{command}; sleep 60"], check=True)  # the pane stays readable if it exits

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def step_shown(text: str):
        row = next((line for line in text.splitlines() if "kd-seed0" in line), None)
        return int(re.split(r"[│|]", row)[3]) if row else None

    try:
        try:
            first = live.wait_for(lambda: step_shown(screen()), "the watch view's first frame", timeout=60)
        except AssertionError:
            raise AssertionError(f"the watch view never showed kd-seed0; the screen:\n{screen()}") from None
        text = screen()
        for expected in ("run live: students", "samples/s", "teachers (teacher set v", "latency (ms)", "wait (ms)",
                         "in flight", "mlp", "cnn", "faults (rank 0)", "latest events"):
            assert expected in text, text
        live.wait_for(lambda: (step_shown(screen()) or 0) > first, "the view refreshed with a later step", timeout=60)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def ingress_call(port: int, token: str, x: np.ndarray):
    metadata = [("application", "teacher-cnn"), ("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TeacherServiceStub(channel)
        info = stub.Describe(pb.DescribeRequest(), metadata=metadata, timeout=30)
        request = pb.SoftTargetsRequest(batch_id="outside-0", inputs_chunk=encode_inputs(x), last_chunk=True)
        chunks = list(stub.SoftTargets(iter([request]), metadata=metadata, timeout=30))
    return info, chunks


def test_serve_grpc_ingress_answers_a_plain_grpc_client(live):
    live.wait_for(lambda: len(latest_by_rank(live)) == 2, "both workers training with teachers")
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    info, chunks = ingress_call(live.grpc_port, INGRESS_TOKEN, x)
    assert info.name == "cnn" and info.output_space == "classes:10" and info.schema_version == SCHEMA_VERSION
    assert chunks[-1].last_chunk and {c.batch_id for c in chunks} == {"outside-0"}
    record = decode(b"".join(c.payload_chunk for c in chunks))
    assert record.teacher == "cnn" and record.logprob.shape == (5, 10) and record.temperature == 4.0
    with pytest.raises(grpc.RpcError) as refused:
        ingress_call(live.grpc_port, "not-the-token", x)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_nothing_reaches_a_teacher_outside_the_ingress(live):
    """The ingress listens on 127.0.0.1 alone; it answers only the run's teachers; the HTTP proxy
    that was running before the run reaches none of them, on any path."""
    import psutil
    import ray.serve

    listening = {c.laddr.ip for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == live.grpc_port}
    bound = {ipaddress.ip_address(ip) for ip in listening}
    bound = {getattr(ip, "ipv4_mapped", None) or ip for ip in bound}  # gRPC may bind ::ffff:127.0.0.1
    assert bound == {ipaddress.ip_address("127.0.0.1")}, listening  # not 0.0.0.0 or [::], as Serve's gRPC proxy binds
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    for application, found in (("teacher-nope", "no teacher app 'teacher-nope'"), (None, "no application metadata")):
        metadata = [("authorization", f"Bearer {INGRESS_TOKEN}")] + ([("application", application)] if application else [])
        with grpc.insecure_channel(f"127.0.0.1:{live.grpc_port}") as channel, pytest.raises(grpc.RpcError) as refused:
            pb_grpc.TeacherServiceStub(channel).Describe(pb.DescribeRequest(), metadata=metadata, timeout=30)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND and found in refused.value.details()
    apps = [app for app in ray.serve.status().applications if app.startswith("teacher-")]
    assert {"teacher-mlp", "teacher-cnn"} <= set(apps)
    for path in ["/", *(f"/{app}" for app in apps)]:
        for body in (None, b"{}"):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(f"http://127.0.0.1:{live.http_port}{path}", data=body, timeout=30)
            assert answer.value.code == 404, (path, answer.value.code)


def test_incompatible_teacher_is_refused_and_run_goes_on(live):
    result = distillery("teacher", "add", "--run", "live", str(CONFIGS / "teachers" / "twelve_classes.yaml"))
    assert result.returncode == 2
    assert "output space is classes:12" in result.stdout and "predicts classes:10" in result.stdout
    assert live.proc.poll() is None
    info = json.loads(distillery("status", "--run", "live", "--json").stdout)
    assert "twelve" not in info["teachers"] and info["teacher_set_version"] == 2
    import ray.serve

    assert "teacher-twelve" not in ray.serve.status().applications


def test_added_teacher_is_used_by_every_worker(live):
    result = distillery("teacher", "add", "--run", "live", str(CONFIGS / "teachers" / "quick_mlp.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "teacher set v3" in result.stdout
    live.wait_for(lambda: all(r["teacher_set/version"] == 3 and "quick-mlp" in r["teachers"]
                              for r in latest_by_rank(live).values()), "both ranks using quick-mlp")
    record = latest_by_rank(live)[0]
    assert record["teacher/quick-mlp/weight"] == 0.5 and record["teacher/mlp/weight"] == 1.0


def test_teacher_weight_changes_while_the_run_goes(live):
    result = distillery("teacher", "weight", "--run", "live", "cnn", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weight 1 -> 3, teacher set v4" in result.stdout
    live.wait_for(lambda: all(r["teacher_set/version"] == 4 and r["teacher/cnn/weight"] == 3.0
                              for r in latest_by_rank(live).values()), "both ranks merging with cnn at weight 3")
    names = ("mlp", "cnn", "quick-mlp")
    record = live.wait_for(lambda: next((r for r in reversed(rank_records(live)) if r["teacher_set/version"] == 4
                                         and all(f"teacher/{n}/effective_weight" in r for n in names)), None),
                           "a record of training steps at weight 3")
    shares = [record[f"teacher/{n}/effective_weight"] for n in names]
    # per-sample weights follow label agreement: they sum to one but are not the static 1 : 3 : 0.5
    assert abs(sum(shares) - 1) < 1e-4 and abs(shares[1] - 3 / 4.5) > 1e-3
    missing = distillery("teacher", "weight", "--run", "live", "nope", "1")
    assert missing.returncode == 2 and "no teacher 'nope'" in missing.stdout


def test_removed_teacher_stops_being_used_and_its_app_is_deleted(live):
    result = distillery("teacher", "remove", "--run", "live", "mlp")
    assert result.returncode == 0, result.stdout + result.stderr
    live.wait_for(lambda: all(r["teacher_set/version"] == 5 and "mlp" not in r["teachers"]
                              for r in latest_by_rank(live).values()), "both ranks without mlp")
    import ray.serve

    live.wait_for(lambda: "teacher-mlp" not in ray.serve.status().applications, "teacher-mlp deleted")
    missing = distillery("teacher", "remove", "--run", "live", "mlp")
    assert missing.returncode == 2 and "no teacher 'mlp'" in missing.stdout


def test_standalone_grpc_teacher_joins_and_leaves_the_run(live, tmp_path):
    token_file = tmp_path / "endpoint.token"
    token_file.write_text("endpoint-token")
    server = Background(tmp_path / "serve.log", "teacher", "serve", str(CONFIGS / "teachers" / "quick_mlp.yaml"),
                        "--port", "0", "--insecure", "--token-file", str(token_file))
    try:
        url = re.search(r"serving on (grpc://\S+)", server.wait_for_line("serving on")).group(1)
        wrong = tmp_path / "wrong.token"
        wrong.write_text("nope")
        refused = distillery("teacher", "add", "--run", "live", "--endpoint", url, "--name", "ext",
                             "--token-file", str(wrong))
        assert refused.returncode == 2 and "wrong bearer token" in refused.stdout
        added = distillery("teacher", "add", "--run", "live", "--endpoint", url, "--name", "ext",
                           "--token-file", str(token_file))
        assert added.returncode == 0, added.stdout + added.stderr
        assert "teacher ext added" in added.stdout and "teacher set v6" in added.stdout
        live.wait_for(lambda: all("ext" in r["teachers"] and "teacher/ext/latency_ms" in r
                                  for r in latest_by_rank(live).values()), "both ranks using the gRPC teacher")
        listed = json.loads(distillery("teacher", "list", "--run", "live", "--json").stdout)
        assert listed["teachers"]["ext"]["endpoint"] == url
        removed = distillery("teacher", "remove", "--run", "live", "ext")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        live.wait_for(lambda: all(r["teacher_set/version"] == 7 for r in latest_by_rank(live).values()),
                      "both ranks without the gRPC teacher")
    finally:
        assert server.stop() == 0


def test_a_standing_serve_teacher_is_used_and_left_running(live, ray_cluster, tmp_path):
    """`distillery serve-config` + `serve deploy` start a teacher that outlives jobs; the run
    uses it with `teacher add --serve-app` and leaves it running when it drops it."""
    import ray.serve

    pool = tmp_path / "pool.yaml"
    written = distillery("serve-config", str(CONFIGS / "pool.yaml"), "-o", str(pool))
    assert written.returncode == 0, written.stdout + written.stderr
    deploy = subprocess.run([sys.executable, "-m", "ray.serve.scripts", "deploy", str(pool), "--address",
                             ray_cluster["dashboard"]], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    try:
        live.wait_for(lambda: ray.serve.status().applications.get("teacher-pool-mlp") is not None and
                      str(ray.serve.status().applications["teacher-pool-mlp"].status).endswith("RUNNING"),
                      "the pool's teacher running", timeout=120)
        version = json.loads(distillery("status", "--run", "live", "--json").stdout)["teacher_set_version"]
        added = distillery("teacher", "add", "--run", "live", "--serve-app", "teacher-pool-mlp", "--weight", "0.5")
        assert added.returncode == 0, added.stdout + added.stderr
        live.wait_for(lambda: all("pool-mlp" in r["teachers"] and r["teacher_set/version"] == version + 1
                                  for r in latest_by_rank(live).values()), "both ranks using the pool's teacher")
        removed = distillery("teacher", "remove", "--run", "live", "pool-mlp")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        live.wait_for(lambda: all("pool-mlp" not in r["teachers"] for r in latest_by_rank(live).values()),
                      "both ranks without it")
        time.sleep(2)
        assert "teacher-pool-mlp" in ray.serve.status().applications  # not the run's to delete
    finally:
        ray.serve.delete("teacher-pool-mlp")


def test_stopped_run_finishes_with_results_metrics_and_no_apps_left(live):
    stop = distillery("stop", "--run", "live")
    assert stop.returncode == 0 and "stop requested during phase kd-seed0" in stop.stdout, stop.stdout + stop.stderr
    assert live.finish(timeout=120) == 0, live.log()[-4000:]
    assert "stopped early (distillery stop) at step" in " ".join(live.log().split())  # rich wraps long lines
    assert "DeepSpeed ZeRO-3 (optimizer offloaded to host memory)" in " ".join(live.log().split())
    final = json.loads((live.run_dir / "state.json").read_text())["phases"]["kd-seed0"]
    assert final["stopped_at_step"] == final["steps"] and final["steps"] % 5 == 0  # at a check (log_every 5)
    rows = {row["kind"] + ":" + row["model"]: row for row in json.loads((live.run_dir / "results.json").read_text())}
    assert set(rows) == {"teacher:teacher mlp", "teacher:teacher cnn", "ensemble:ensemble of the teachers",
                         "kd:student (KD)"}
    for row in rows.values():
        assert 0.0 <= row["score_mean"] <= 1.0 and row["parameters"] > 0
    assert rows["kd:student (KD)"]["parameters"] == 16 * 16 + 16 + 16 * 10 + 10  # it read the 16-value profiles
    assert "| student (KD) |" in (live.run_dir / "results.md").read_text()
    keys = set().union(*live.metrics())
    assert {"teacher_set/version", "teacher/cnn/weight", "loss/kd", "loss/ce", "throughput/samples_per_s",
            "eval/test_accuracy"} <= keys
    assert list((live.run_dir / "tensorboard" / "kd-seed0").glob("events.out.tfevents.*"))
    events = [r["event"] for r in live.metrics() if "event" in r]
    assert events[:2] == ["teacher_added", "teacher_added"] and {"teacher_refused", "teacher_weight", "stop_requested"} <= set(events)
    import ray.serve

    assert not [a for a in ray.serve.status().applications if a.startswith("teacher-")]
    # five teacher-set changes, served and external teachers: each application checked against the set and the answers
    audit = live.audit()
    phase = audit["phases"]["kd-seed0"]
    assert audit["exactly_once"] and phase["planned"] == phase["applied"] == 2 * final["steps"], phase
    assert phase["answers_checked"] >= phase["applied"]
    assert "audit: every planned batch applied exactly once" in " ".join(live.log().split())


def test_unknown_run_is_reported(live):
    result = distillery("status", "--run", "no-such-run")
    assert result.returncode == 2 and "no running job named 'no-such-run'" in result.stdout
