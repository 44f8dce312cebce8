"""The phases of a run: order, teachers, born-again snapshots and initial weights."""

import yaml

from cluster.config import load_run_config
from orchestration.phases import INIT_SEED_STRIDE, student_jobs
from orchestration.run import checked_terms
from teachers.backend import ResolvedModel

MODEL = ResolvedModel("teachers.zoo:mlp", {"in_features": 64, "num_classes": 10})


def test_born_again_chain_and_teacherless_methods(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"name": "p", "seeds": [0, 1]},
        "teachers": [{"name": "mlp", "model": {"factory": "teachers.zoo:mlp"}}],
        "student": {"model": {"factory": "teachers.zoo:mlp"}},
        "distill": {"methods": {
            "byot": [{"name": "ce"}, {"name": "byot", "params": {"exits": ["0"]}}],
            "gen0": [{"name": "ce"}],
            "gen1": {"teacher_snapshot": "gen0", "terms": [{"name": "kd"}]},
            "gen2": {"teacher_snapshot": "gen1", "terms": [{"name": "kd"}]},
            "kd": [{"name": "kd"}]}}}))
    cfg = load_run_config(path)
    jobs = {j.phase: j for j in student_jobs(cfg, checked_terms(cfg), MODEL, "classification", None, {})}
    assert list(jobs)[:6] == ["kd-byot-seed0", "kd-gen0-seed0", "kd-gen1-seed0", "kd-gen2-seed0", "kd-kd-seed0",
                              "baseline-seed0"]
    assert not jobs["kd-byot-seed0"].use_teachers and not jobs["kd-gen0-seed0"].use_teachers
    assert jobs["kd-kd-seed1"].use_teachers and jobs["kd-kd-seed1"].teacher_snapshot is None
    assert jobs["kd-gen1-seed1"].teacher_snapshot == "kd-gen0-seed1" and jobs["kd-gen2-seed1"].teacher_snapshot == "kd-gen1-seed1"
    assert [jobs[f"kd-gen{g}-seed0"].export_snapshot for g in range(3)] == [True, True, False]
    assert [jobs[f"kd-gen{g}-seed1"].init_seed for g in range(3)] == [1, 1 + INIT_SEED_STRIDE, 1 + 2 * INIT_SEED_STRIDE]
    assert jobs["baseline-seed1"].init_seed == jobs["kd-kd-seed1"].init_seed == 1  # KD and baseline start alike
    encoder_jobs = student_jobs(cfg, checked_terms(cfg), MODEL, "embedding", None, {})
    assert [j.train for j in encoder_jobs if j.phase.startswith("baseline")] == [False, False]  # the untrained student
