"""Metric records reach metrics.jsonl, TensorBoard and an MLflow store (a local file store here)."""

import json

from cluster.metrics import MetricsSink, MlflowSink


def test_rank0_metrics_go_to_mlflow_one_run_per_phase(tmp_path):
    uri = f"file://{tmp_path / 'mlruns'}"
    sink = MetricsSink(tmp_path / "run", MlflowSink(uri, "distillery-test", "demo"))
    for step in (1, 2, 3):
        for phase in ("kd-seed0", "baseline-seed0"):
            sink.write({"phase": phase, "rank": 0, "step": step, "loss/total": 1.0 / step, "teacher/mlp/weight": 1.0,
                        "teachers": ["mlp"]})
        sink.write({"phase": "kd-seed0", "rank": 1, "step": step, "loss/total": 9.0})  # only rank 0 is logged
    sink.write({"event": "teacher_added", "teacher": "mlp"})
    sink.close()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("distillery-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"demo/kd-seed0", "demo/baseline-seed0"}
    kd = runs["demo/kd-seed0"]
    assert kd.data.tags["distillery.run"] == "demo" and kd.info.status == "FINISHED"
    history = client.get_metric_history(kd.info.run_id, "loss/total")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert client.get_metric_history(kd.info.run_id, "teacher/mlp/weight")[0].value == 1.0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and lines[-1]["event"] == "teacher_added"
    assert list((tmp_path / "run" / "tensorboard").iterdir())
