"""A real run on the session's Ray cluster: Serve teachers, 2 Train workers, DeepSpeed ZeRO-2.

While it trains, the CLI lists and changes its teachers; at the end it must have written its
results and metrics and deleted its Serve apps. The tests run in file order on one run.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import CONFIGS, RunProcess, distillery

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(ray_cluster, tmp_path_factory):
    run = RunProcess(CONFIGS / "live.yaml", "live", tmp_path_factory.mktemp("runs"))
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
    listed = distillery("teacher", "list", "--run", "live", "--json")
    assert json.loads(listed.stdout)["teachers"]["cnn"]["output_space"] == "classes:10"


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


def test_removed_teacher_stops_being_used_and_its_app_is_deleted(live):
    result = distillery("teacher", "remove", "--run", "live", "mlp")
    assert result.returncode == 0, result.stdout + result.stderr
    live.wait_for(lambda: all(r["teacher_set/version"] == 4 and "mlp" not in r["teachers"]
                              for r in latest_by_rank(live).values()), "both ranks without mlp")
    import ray.serve

    live.wait_for(lambda: "teacher-mlp" not in ray.serve.status().applications, "teacher-mlp deleted")
    missing = distillery("teacher", "remove", "--run", "live", "mlp")
    assert missing.returncode == 2 and "no teacher 'mlp'" in missing.stdout


def test_run_finishes_with_results_metrics_and_no_apps_left(live):
    assert live.finish() == 0, live.log()[-4000:]
    rows = {row["kind"] + ":" + row["model"]: row for row in json.loads((live.run_dir / "results.json").read_text())}
    assert set(rows) == {"teacher:teacher mlp", "teacher:teacher cnn", "kd:student (KD)"}
    for row in rows.values():
        assert 0.0 <= row["accuracy_mean"] <= 1.0 and row["parameters"] > 0
    assert "| student (KD) |" in (live.run_dir / "results.md").read_text()
    keys = set().union(*live.metrics())
    assert {"teacher_set/version", "teacher/cnn/weight", "loss/kd", "loss/ce", "throughput/samples_per_s",
            "eval/test_accuracy"} <= keys
    assert list((live.run_dir / "tensorboard" / "kd-seed0").glob("events.out.tfevents.*"))
    events = [r["event"] for r in live.metrics() if "event" in r]
    assert events[:2] == ["teacher_added", "teacher_added"] and "teacher_refused" in events
    import ray.serve

    assert not [a for a in ray.serve.status().applications if a.startswith("teacher-")]


def test_unknown_run_is_reported(live):
    result = distillery("status", "--run", "no-such-run")
    assert result.returncode == 2 and "no running job named 'no-such-run'" in result.stdout
