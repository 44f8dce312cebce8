"""The phases of a run: order, teachers, born-again snapshots and initial weights."""

import yaml

from orchestration.config import load_run_config
from orchestration.phases import student_jobs
from orchestration.regimes.born_again import INIT_SEED_STRIDE, SnapshotExport, SnapshotTeacher
from orchestration.regimes.continual import InitFrom, MemoryReplay, StoreMemory, TaskEvaluation, TaskRows
from orchestration.run import checked_terms
from teachers.backend import ResolvedModel

MODEL = ResolvedModel("models.zoo:mlp", {"in_features": 64, "num_classes": 10})


def _field(job, hook_type, read, default=None):
    hook = job.hook(hook_type)
    return read(hook) if hook is not None else default


def teacher_snapshot(job):
    return _field(job, SnapshotTeacher, lambda h: h.teacher_phase)


def export_snapshot(job):
    return job.hook(SnapshotExport) is not None


def init_from(job):
    return _field(job, InitFrom, lambda h: h.previous)


def train_on(job):
    return _field(job, TaskRows, lambda h: h.train_on)


def eval_by(job):
    return _field(job, TaskEvaluation, lambda h: (h.column, h.values))


def store_memory(job):
    return _field(job, StoreMemory, lambda h: h.samples)


def memory_from(job):
    return _field(job, MemoryReplay, lambda h: h.memory_from, ())


def test_born_again_chain_and_teacherless_methods(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"name": "p", "seeds": [0, 1]},
        "teachers": [{"name": "mlp", "model": {"factory": "models.zoo:mlp"}}],
        "student": {"model": {"factory": "models.zoo:mlp"}},
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
    assert jobs["kd-kd-seed1"].use_teachers and teacher_snapshot(jobs["kd-kd-seed1"]) is None
    assert teacher_snapshot(jobs["kd-gen1-seed1"]) == "kd-gen0-seed1" and teacher_snapshot(jobs["kd-gen2-seed1"]) == "kd-gen1-seed1"
    assert [export_snapshot(jobs[f"kd-gen{g}-seed0"]) for g in range(3)] == [True, True, False]
    assert [jobs[f"kd-gen{g}-seed1"].init_seed for g in range(3)] == [1, 1 + INIT_SEED_STRIDE, 1 + 2 * INIT_SEED_STRIDE]
    assert jobs["baseline-seed1"].init_seed == jobs["kd-kd-seed1"].init_seed == 1  # KD and baseline start alike
    encoder_jobs = student_jobs(cfg, checked_terms(cfg), MODEL, "embedding", None, {})
    assert [j.train for j in encoder_jobs if j.phase.startswith("baseline")] == [False, False]  # the untrained student


def test_continual_tasks_chain_snapshots_and_old_classes(tmp_path):
    from ingest.loading import load_dataset
    from orchestration.regimes.continual import continual_jobs

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"name": "c", "seeds": [0]}, "continual": {"tasks": [2, 0, 1]},
        "student": {"model": {"factory": "models.zoo:mlp"}},
        "distill": {"methods": {"lwf": [{"name": "ce"}, {"name": "lwf"}]}}}))
    cfg = load_run_config(path)
    jobs = {j.phase: j for j in continual_jobs(cfg, checked_terms(cfg), MODEL, load_dataset(cfg.data), None)}
    assert list(jobs) == [f"{kind}-task{k}-seed0" for kind in ("kd-lwf", "baseline") for k in range(3)]
    first, second, third = (jobs[f"kd-lwf-task{k}-seed0"] for k in range(3))
    assert train_on(first) == ("task", (2,)) and train_on(third) == ("task", (1,)) and eval_by(first) == ("task", (2, 0, 1))
    assert not first.use_teachers and init_from(first) is None and export_snapshot(first)
    assert teacher_snapshot(second) == init_from(second) == "kd-lwf-task0-seed0"
    assert [t.params.get("classes") for t in third.terms] == [None, [0, 1, 4, 5]]  # tasks 2 and 0 came first
    assert not export_snapshot(third)
    naive = jobs["baseline-task1-seed0"]
    assert init_from(naive) == "baseline-task0-seed0" and not naive.use_teachers and teacher_snapshot(naive) is None
    assert store_memory(first) is None and memory_from(third) == ()  # replay_targets: snapshot (the default)

    stored = yaml.safe_load(path.read_text())
    stored["continual"].update(replay_samples=5, replay_targets="stored")
    path.write_text(yaml.safe_dump(stored))
    cfg = load_run_config(path)
    jobs = {j.phase: j for j in continual_jobs(cfg, checked_terms(cfg), MODEL, load_dataset(cfg.data), None)}
    assert [store_memory(jobs[f"kd-lwf-task{k}-seed0"]) for k in range(3)] == [5, 5, None]
    assert memory_from(jobs["kd-lwf-task2-seed0"]) == ("kd-lwf-task0-seed0", "kd-lwf-task1-seed0")
    assert memory_from(jobs["baseline-task2-seed0"]) == ()  # plain CE has no targets to replace


def test_phases_carry_method_teachers_and_weighting(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"name": "w", "seeds": [0]},
        "teachers": [{"name": n, "model": {"factory": "models.zoo:mlp"}} for n in ("a", "b", "c")],
        "student": {"model": {"factory": "models.zoo:mlp"}},
        "distill": {"weighting": {"strategy": "entropy"}, "methods": {
            "gate": {"terms": [{"name": "kd"}], "teachers": ["a", "c"], "weighting": {"strategy": "gating"}},
            "all": [{"name": "kd"}]}}}))
    cfg = load_run_config(path)
    jobs = {j.phase: j for j in student_jobs(cfg, checked_terms(cfg), MODEL, "classification", None, {})}
    assert jobs["kd-gate-seed0"].teachers == ["a", "c"] and jobs["kd-gate-seed0"].weighting.gate_teachers == ("a", "c")
    assert jobs["kd-all-seed0"].teachers is None and jobs["kd-all-seed0"].weighting.strategy == "entropy"


def test_replay_keeps_the_same_memory_of_each_earlier_task():
    import numpy as np

    from ingest.config import DataConfig
    from ingest.loading import load_dataset
    from orchestration.regimes.continual import task_rows

    train = load_dataset(DataConfig()).train
    plain = task_rows(train, ("task", (2,)), None)
    assert set(train.columns["task"][plain].tolist()) == {2}
    with_memory = task_rows(train, ("task", (2,)), ("task", (0, 1), 5))
    tasks = train.columns["task"][with_memory]
    assert np.bincount(tasks).tolist() == [5, 5, len(plain)]
    again = task_rows(train, ("task", (3,)), ("task", (0, 1, 2), 5))
    assert set(with_memory[tasks == 0]) <= set(again.tolist())  # task 0's memory is the same later on
