"""report.md and its plots, drawn from a run's metrics records."""

import json

import numpy as np
from matplotlib.image import imread

from orchestration.report import PLOTS, write_report


def _run_dir(tmp_path):
    run = tmp_path / "demo"
    run.mkdir()
    records = [{"event": "teacher_added", "teacher": "mlp", "teacher_set/version": 1, "time": 0.0}]
    for phase, kd in [(f"{kind}-seed{seed}", kind == "kd") for seed in range(3) for kind in ("kd", "baseline")]:
        noise = 1 + 0.05 * int(phase[-1])
        for step in range(2, 42, 2):
            record = {"phase": phase, "rank": 0, "step": step, "epoch": step // 10, "time": float(step),
                      "loss/total": 2.0 * noise / step ** 0.5, "loss/ce": 1.5 * noise / step ** 0.5}
            if kd:
                record.update({"loss/kd": 0.5 / step ** 0.5, "teacher/mlp/weight": 1.0,
                               "teacher/mlp/effective_weight": 1.0 if step < 20 else 0.6,
                               "teacher/mlp/wait_ms": 5.0 + step % 3,
                               "teacher/mlp/latency_ms": 40.0 + step, "teachers": ["mlp"]})
            if step % 10 == 0:
                record["eval/test_accuracy"] = 0.5 + step / 100 - (0 if kd else 0.05) + 0.01 * int(phase[-1])
            records.append(record)
        records.append({**records[-1], "rank": 1})  # other ranks are left out
    records.append({"event": "teacher_lost", "teacher": "cnn", "reason": "hung", "time": 30.0})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{cut short")
    teachers = [("teacher mlp", 0.97), ("teacher cnn", 0.968), ("ensemble of the teachers", 0.972)]  # labels that
    (run / "results.json").write_text(json.dumps([{"model": model, "kind": "teacher", "accuracy_mean": score}  # collided
                                                  for model, score in teachers]))
    (run / "results.md").write_text("| model | accuracy |\n|---|---|\n| teacher mlp | 0.97 |")
    return run


def test_the_report_draws_every_plot_and_lists_the_events(tmp_path):
    report = write_report(_run_dir(tmp_path)).read_text()
    for name in PLOTS:
        assert f"](report/{name}.png)" in report
        image = imread(tmp_path / "demo" / "report" / f"{name}.png")
        assert image.shape[:2] == (450, 800)
        assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 20  # lines, labels, not blank
    assert "| teacher mlp | 0.97 |" in report
    assert "| teacher_lost | teacher=cnn, reason=hung |" in report


def test_a_run_without_teachers_or_evaluations_gets_only_what_it_has(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"phase": "baseline-seed0", "rank": 0, "step": 2, "loss/ce": 1.0}))
    report = write_report(run).read_text()
    assert "report/loss.png" in report and "teacher_weights" not in report and "Events" not in report
