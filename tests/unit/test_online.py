"""Online co-training without Ray: the peer board's waits, the config checks, each peer's
phases, staleness bookkeeping and the results rows."""

import threading
import time

import pytest
import yaml

from cluster.errors import ConfigError
from orchestration.config import load_run_config
from orchestration.regimes.co_training import (CoTraining, PeerBoard, PeerTimeoutError, TargetLag, online_gain_lines,
                                               online_jobs, online_rows)
from orchestration.progress import progress_line
from orchestration.regimes.born_again import INIT_SEED_STRIDE
from teachers.backend import ResolvedModel
from teachers.soft_targets import pack_soft_targets
from teachers.targets import TeacherTargets
from teachers.teacher_set import live_step, live_version

MODEL = ResolvedModel("models.zoo:mlp", {"in_features": 64, "num_classes": 10})


def later(seconds, fn, *args):
    timer = threading.Timer(seconds, fn, args)
    timer.start()
    return timer


def test_replicas_long_poll_for_newer_weights():
    board = PeerBoard(["a", "b"])
    assert board.wait_published("a", None, timeout_s=0.05) is None
    later(0.05, board.publish, "a", (0, 5), ["ref5"])
    assert board.wait_published("a", None, timeout_s=5) == ((0, 5), ["ref5"])
    board.publish("a", (0, 3), ["old"])  # an older key never replaces a newer one
    assert board.wait_published("a", (0, 5), timeout_s=0.05) is None
    board.publish("a", (1, 0), ["next round"])
    assert board.wait_published("a", (0, 5), timeout_s=0.05) == ((1, 0), ["next round"])
    with pytest.raises(KeyError, match="not a peer"):
        board.publish("c", (0, 0), [])


def test_served_key_is_the_slowest_replicas():
    board = PeerBoard(["a", "b"], replicas=2)
    board.loaded("a", "r1", (0, 10))
    assert board.served("a") is None  # one replica of two serves
    board.loaded("a", "r2", (0, 5))
    assert board.served("a") == (0, 5)
    later(0.05, board.loaded, "a", "r2", (0, 12))
    assert board.wait_served("a", (0, 8), timeout_s=5) == (0, 10)
    with pytest.raises(PeerTimeoutError, match="serves \\(0, 10\\), its trainer waits for \\(0, 20\\)"):
        board.wait_served("a", (0, 20), timeout_s=0.05)


def test_a_round_starts_when_every_peer_finished_the_last_and_teachers_serve_it():
    board = PeerBoard(["a", "b"])
    board.loaded("b", "r", (0, 0))
    board.wait_round("a", 0, ["b"], timeout_s=1)
    with pytest.raises(PeerTimeoutError, match=r"not done with round 0: \['a', 'b'\].*not serving round 1 yet: \['b'\]"):
        board.wait_round("a", 1, ["b"], timeout_s=0.05)
    board.finish_round("a", 0)
    start = time.monotonic()
    later(0.05, board.finish_round, "b", 0)
    board.wait_round("a", 1, [], timeout_s=5)  # the finish barrier alone
    later(0.05, board.loaded, "b", "r", (1, 0))
    board.wait_round("a", 1, ["b"], timeout_s=5)
    assert time.monotonic() - start >= 0.1
    assert board.status()["b"] == {"published": None, "served": (1, 0), "finished_round": 0}


def online_config(tmp_path, online=None, **sections):
    data = {"run": {"name": "o", "seeds": [0, 1]}, "student": {"model": {"factory": "models.zoo:mlp"}},
            "online": online or {"peers": [{"name": "a"}, {"name": "b"}]}, **sections}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_run_config(path)


@pytest.mark.parametrize("online, sections, message", [
    ({"peers": [{"name": "a"}]}, {}, "at least 2"),
    ({"peers": [{"name": "a"}, {"name": "a"}]}, {}, "names must be unique"),
    ({"peers": [{"name": "a", "learns_from": ["c"]}, {"name": "b"}]}, {}, "not another peer"),
    ({"peers": [{"name": "a", "learns_from": ["a"]}, {"name": "b"}]}, {}, "not another peer"),
    ({"peers": [{"name": "a", "learns_from": []}, {"name": "b", "learns_from": []}]}, {}, "no peer learns"),
    ({"peers": [{"name": "a"}, {"name": "b"}], "refresh_every": 30, "max_staleness": 20}, {}, "refresh_every"),
    (None, {"teachers": [{"name": "t", "model": {"factory": "models.zoo:mlp"}}]}, "drop teachers"),
    (None, {"distill": {"mode": "offline"}}, "distill.mode online"),
    (None, {"distill": {"terms": [{"name": "fitnet", "params": {"student": "net.0", "teacher": "t/net.0"}}]}},
     "serve no features"),
    (None, {"distill": {"weighting": {"strategy": "gating"}}}, "names fixed teachers"),
])
def test_online_configs_that_cannot_work_are_refused(tmp_path, online, sections, message):
    with pytest.raises(ConfigError, match=message):
        online_config(tmp_path, online, **sections)


def role(job):
    """The phase's part in co-training (None for a phase outside it)."""
    hook = job.hook(CoTraining)
    return hook.role if hook is not None else None


def test_each_peer_trains_its_rounds_then_alone(tmp_path):
    cfg = online_config(tmp_path, {"peers": [{"name": "big", "learns_from": []}, {"name": "a"}, {"name": "b"}]},
                        distill={"terms": [{"name": "ce"}, {"name": "kd"}]})
    jobs = online_jobs(cfg, [], {p: MODEL for p in ("big", "a", "b")}, None)
    assert [j.phase for j in jobs["a"]] == ["mutual-a-seed0", "mutual-a-seed1", "alone-a-seed0", "alone-a-seed1"]
    a0, alone_a0 = jobs["a"][0], jobs["a"][2]
    assert a0.teachers == ["peer-big", "peer-b"] and a0.use_teachers and role(a0).learns_from == ("big", "b")
    assert role(a0).round == 0 and role(jobs["a"][1]).round == 1 and role(alone_a0) is None
    assert a0.init_seed == alone_a0.init_seed == INIT_SEED_STRIDE  # the same start with peers and alone
    big0 = jobs["big"][0]
    assert not big0.use_teachers and [t.name for t in big0.terms] == ["ce"] and role(big0).publishes
    assert all(j.trainer == "a" for j in jobs["a"])


def test_staleness_and_lag_bookkeeping():
    assert live_step(live_version("peer-a", (2, 40))) == (2, 40) and live_step("abc123") is None
    record = pack_soft_targets(__import__("numpy").zeros((2, 10), "float32"), batch_id="b", teacher="peer-a",
                               teacher_version=live_version("peer-a", (0, 7)), temperature=1.0,
                               output_space="classes:10", dense_max_classes=1024, top_k=4)
    lag = TargetLag()
    lag.observe(TeacherTargets({"peer-a": record}, {"peer-a": 1.0}), step=12)
    lag.observe(TeacherTargets({"peer-a": record}, {"peer-a": 1.0}), step=10)
    assert lag.metrics() == {"teacher/peer-a/lag_steps": 5} and lag.metrics() == {}


def test_results_compare_each_peer_with_itself_alone():
    def phase(acc):
        return {"test_accuracy": acc, "parameters": 100, "train_s": 1.0}
    phases = {"mutual-a-seed0": {**phase(0.9), "online_max_staleness": 6, "online_publications": 20,
                                 "online_blocked_s": 0.5},
              "mutual-a-seed1": {**phase(0.8), "online_max_staleness": 9, "online_publications": 20,
                                 "online_blocked_s": 0.0},
              "alone-a-seed0": phase(0.8), "alone-a-seed1": phase(0.7), "alone-b-seed0": phase(0.5)}
    rows = online_rows(phases, ["a", "b"], [0, 1])
    assert [r["kind"] for r in rows] == ["mutual:a", "alone:a", "alone:b"]
    assert rows[0]["score_mean"] == pytest.approx(0.85) and "staleness at most 9 steps" in rows[0]["note"]
    assert online_gain_lines(rows) == ["peer a: +10.00 accuracy points with its peers over alone"]


def test_progress_shows_one_line_per_peer_trainer():
    status = {"progress": {f"{p}/rank0": {"phase": f"mutual-{p}-seed0", "epoch": 1, "step": 9,
                                          "online/staleness_steps": 4} for p in "ab"}}
    lines = progress_line(status).splitlines()
    assert len(lines) == 2 and lines[1].startswith("mutual-b-seed0") and "endpoint 4 steps behind" in lines[0]
