"""`distillery sweep`: grid cells become valid run configs; recorded runs become scaling-law
points (teachers and no-KD students supervised, dense KD students distilled); the report."""

import json
import math

import pytest
from rich.console import Console

from orchestration.config import RunConfig
from planning.fit import fit_law
from planning.history import collect
from planning.sweep import capacity_gap_lines, load_sweep, run_config, write_report

SWEEP = "deploy/configs/sweep.yaml"


def test_every_grid_cell_is_a_valid_run_with_one_dense_kd_student_per_teacher():
    sweep = load_sweep(SWEEP)
    cfg = RunConfig(**run_config(sweep, 1, 1024))
    assert cfg.run.name == "sweep-s1-n1024" and cfg.run.baseline and cfg.data.student_train_samples == 1024
    assert [t.name for t in cfg.teachers] == ["t-xs", "t-s", "t-m"]
    assert cfg.teachers[2].model.kwargs["config"]["n_embd"] == 160
    assert cfg.student.model.kwargs["config"]["n_embd"] == 64
    assert {n: (m.teachers, m.dense) for n, m in cfg.distill.methods.items()} == {
        "from-t-xs": (["t-xs"], True), "from-t-s": (["t-s"], True), "from-t-m": (["t-m"], True)}


def test_a_held_out_budget_must_be_a_budget_and_not_all_of_them(tmp_path):
    from cluster.errors import ConfigError

    path = tmp_path / "sweep.yaml"
    path.write_text(open(SWEEP).read().replace("held_out: [2048]", "held_out: [4096]"))
    with pytest.raises(ConfigError, match="are not budgets of the grid"):
        load_sweep(path)


def _write_run(root, sweep, student, budget, teacher_ppl, losses):
    cfg = RunConfig(**run_config(sweep, student, budget))
    run_dir = root / cfg.run.name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.model_dump_json())
    phases = {f"kd-from-{t}-seed0": {"test_nll": losses[t], "parameters": 1000 * (student + 1), "tokens_seen": budget * 30}
              for t in teacher_ppl}
    phases["baseline-seed0"] = {"test_nll": losses["none"], "parameters": 1000 * (student + 1)}
    (run_dir / "state.json").write_text(json.dumps({"phases": phases}))
    rows = [{"model": f"teacher {t}", "kind": "teacher", "metric": "test_perplexity", "score_mean": ppl,
             "parameters": 5000 * (i + 1)} for i, (t, ppl) in enumerate(teacher_ppl.items())]
    (run_dir / "results.json").write_text(json.dumps(rows))


def test_recorded_runs_become_points_and_a_report(tmp_path):
    sweep = load_sweep(SWEEP)
    ppl = {"t-xs": 300.0, "t-s": 150.0, "t-m": 90.0}
    _write_run(tmp_path, sweep, 0, 256, ppl, {"t-xs": 6.0, "t-s": 5.6, "t-m": 5.7, "none": 6.1})
    _write_run(tmp_path, sweep, 1, 1024, ppl, {"t-xs": 5.5, "t-s": 5.0, "t-m": 4.9, "none": 5.3})
    history = collect([tmp_path], "all")
    assert len(history.distilled) == 6 and len(history.supervised) == 2 + 3  # a shared teacher counts once
    point = next(p for p in history.distilled if p.phase == "kd-from-t-m-seed0" and p.run == "sweep-s0-n256")
    assert point.teacher_loss == pytest.approx(math.log(90.0)) and point.tokens == 256 * 30
    baseline = next(p for p in history.supervised if p.phase == "baseline-seed0" and p.run == "sweep-s0-n256")
    assert baseline.tokens > 0 and baseline.loss == 6.1  # no tokens_seen recorded: epochs x the subset's tokens
    lines = capacity_gap_lines(history.distilled)
    assert "capacity gap: the best student came from the teacher with L_T 5.011" in lines[0]
    assert "no capacity gap" in lines[1]
    fit = fit_law(history.supervised, history.distilled, held_out=lambda p: p.run == "sweep-s1-n1024")
    write_report(tmp_path / "law.json", fit, history, {"sweep-s1-n1024"}, Console(file=open("/dev/null", "w")), "t")
    assert (tmp_path / "law.png").stat().st_size > 1000 and "held out" in (tmp_path / "law.md").read_text()
    assert len(json.loads((tmp_path / "law.points.json").read_text())) == 11


def test_non_embedding_counts_leave_out_the_token_and_position_embeddings(tmp_path):
    import torch

    from ingest.loading import load_dataset
    from teachers.backend import resolve_model

    sweep = load_sweep(SWEEP)
    ppl = {"t-xs": 300.0, "t-s": 150.0, "t-m": 90.0}
    _write_run(tmp_path, sweep, 1, 256, ppl, {"t-xs": 6.0, "t-s": 5.6, "t-m": 5.7, "none": 6.1})
    history = collect([tmp_path])  # the paper's convention is the default
    cfg = RunConfig(**run_config(sweep, 1, 256))
    data = load_dataset(cfg.data)

    def counts(spec):
        model = resolve_model(spec, in_features=data.in_features, num_classes=data.num_classes).build()
        embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        assert len(embeddings) == 2  # token and position
        total = sum(p.numel() for p in model.parameters())
        return total, total - sum(m.weight.numel() for m in embeddings)

    student_total, student_non_embedding = counts(cfg.student.model)
    assert 0 < student_non_embedding < student_total
    assert {p.params for p in history.distilled} == {student_non_embedding}
    teachers = {p.teacher: p.params for p in history.supervised if p.teacher}
    assert teachers["t-m"] == counts(next(t for t in cfg.teachers if t.name == "t-m").model)[1]
    assert teachers["t-xs"] < teachers["t-s"] < teachers["t-m"]
    fit = fit_law(history.supervised, history.distilled)
    assert fit.law.parameter_count == "non_embedding"
    with pytest.raises(ValueError, match="parameter count 'some'"):
        collect([tmp_path], "some")


def test_the_report_tabulates_mean_and_spread_over_seeds():
    from planning.fit import Point
    from planning.history import History
    from planning.sweep import seed_table_lines

    history = History(
        supervised=[Point(5e3, 1e6, math.log(90.0), run="c", phase="teacher t-m", teacher="t-m"),
                    Point(1e3, 1e4, math.log(400.0), run="c", phase="baseline-seed0"),
                    Point(1e3, 1e4, math.log(420.0), run="c", phase="baseline-seed1")],
        distilled=[Point(1e3, 1e4, math.log(v), teacher_loss=math.log(90.0), run="c", phase=f"kd-from-t-m-seed{i}",
                         teacher="t-m") for i, v in enumerate((300.0, 310.0, 320.0))])
    lines = seed_table_lines(history)
    assert lines[0] == "| run | no KD | from t-m (90.0) |"
    assert lines[2] == "| c | 410.0 ± 14.1 (2) | 310.0 ± 10.0 (3) |"


def test_a_gap_within_the_seeds_spread_is_not_called_clear():
    from planning.fit import Point

    def points(run, teacher_loss, losses):
        return [Point(1e3, 1e4, loss, teacher_loss=teacher_loss, run=run, phase=f"kd-seed{i}", teacher=str(teacher_loss))
                for i, loss in enumerate(losses)]

    noisy = points("c-n256", 4.3, [5.0, 5.2, 5.4]) + points("c-n256", 4.5, [5.05, 5.1, 5.15])
    clear = points("c-n1024", 4.3, [5.0, 5.01, 5.02]) + points("c-n1024", 4.5, [4.8, 4.81, 4.82])
    first, second = capacity_gap_lines(noisy + clear)
    assert first.startswith("- c-n256") and "not a clear gap" in first  # natural order: 256 before 1024
    assert "capacity gap" in second and "by 0.200 nats" in second and "not a clear gap" not in second
