"""Online co-training on a real local Ray: two peer trainers at once over two rounds. Peer b
trains on labels and is served as a live teacher endpoint refreshed from its trainer while it
trains; peer a learns from it and teaches nobody (mutual learning is the same machinery with
both served). Then each peer alone. The staleness bound holds in every record, the targets
come from refreshed weights, rounds never overlap and no Serve app is left behind."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CONFIGS, RunProcess

pytestmark = pytest.mark.integration
MAX_STALENESS, STEPS = 4, 2 * (150 // 16)


def test_a_peer_learns_from_a_peer_that_keeps_training(ray_cluster, tmp_path):
    run = RunProcess(CONFIGS / "online.yaml", "online", tmp_path)
    assert run.finish() == 0, run.log()[-4000:]
    assert "peer a: " in run.log() and "with its peers over alone" in run.log()

    rows = {r["kind"]: r for r in json.loads((run.run_dir / "results.json").read_text())}
    assert set(rows) == {f"{mode}:{p}" for mode in ("mutual", "alone") for p in "ab"}
    assert all(r["seeds"] == 2 and 0.3 < r["score_mean"] <= 1.0 for r in rows.values())
    assert "staleness at most" in rows["mutual:b"]["note"] and "staleness" not in rows["alone:b"]["note"]
    phases = json.loads((run.run_dir / "state.json").read_text())["phases"]
    for phase in ("mutual-b-seed0", "mutual-b-seed1"):
        assert phases[phase]["steps"] == STEPS and phases[phase]["online_max_staleness"] <= MAX_STALENESS
        assert phases[phase]["online_publications"] >= STEPS // 2

    records = run.metrics()
    trained = [r for r in records if r.get("rank") == 0 and "online/staleness_steps" in r]
    assert {r["trainer"] for r in trained} == {"b"}  # a publishes nothing: nobody learns from it
    assert "staleness" not in rows["mutual:a"]["note"]
    assert max(r["online/staleness_steps"] for r in trained) <= MAX_STALENESS
    lags = [(r["step"], r["teacher/peer-b/lag_steps"]) for r in records
            if r.get("phase") == "mutual-a-seed1" and "teacher/peer-b/lag_steps" in r]
    assert lags and all(lag < step for step, lag in lags if step > 10)  # b's weights were refreshed along the way

    added = {r["teacher"] for r in records if r.get("event") == "teacher_added" and r.get("live")}
    assert added == {"peer-b"}
    order = [(r["event"], r["peer"], r["round"]) if "event" in r else ("record", r["phase"]) for r in records
             if r.get("event") == "peer_round_done" or r.get("rank") == 0 and "phase" in r]
    first_of_round1 = min(i for i, item in enumerate(order) if item[0] == "record" and item[1].endswith("seed1"))
    assert {("peer_round_done", p, 0) for p in "ab"} <= set(order[:first_of_round1])  # rounds never overlap
    assert not any(item[0] == "record" and item[1].startswith("alone") for item in order[:first_of_round1])
    import ray.serve

    assert not [a for a in ray.serve.status().applications if a.startswith("teacher-")]
