"""The interfaces between the layers, driven without Ray: a soft-target source and the regime
hooks against the in-process run control (`students.run_control.LocalRunControl`)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ingest.batches import plan_epoch
from ingest.loading import Split
from orchestration.regimes.born_again import SnapshotExport, SnapshotTeacher
from orchestration.regimes.co_training import CoTraining, OnlineRole
from orchestration.regimes.continual import InitFrom, MemoryReplay
from students.checkpoint import ClientState
from students.hooks import Phase
from students.reporting import ProgressReporter, StopCheck
from students.run_control import LocalRunControl
from teachers.errors import SoftTargetError
from teachers.local import LocalTeachers
from teachers.store import StoredTeachers
from teachers.target_source import SoftTargetSource
from teachers.teacher_set import TeacherEntry, TeacherSet, snapshot_teacher_name
from tests.unit.teacher_fixtures import CLASSES, IN_FEATURES, loaded_teacher, teacher_args


def _split(n: int = 32) -> Split:
    rng = np.random.default_rng(0)
    return Split(rng.random((n, IN_FEATURES), dtype=np.float32), rng.integers(0, CLASSES, n))


def _teacher_set(folder, temperature: float = 4.0) -> tuple[TeacherSet, list]:
    args = teacher_args(folder, temperature=temperature)
    version = loaded_teacher(folder, temperature=temperature).version
    entry = TeacherEntry("mlp", 1.0, f"classes:{CLASSES}", CLASSES, version)
    return TeacherSet().with_teacher(entry), [args]


def test_every_source_speaks_the_interface():
    from teachers.client import TeacherClient

    wanted = {name for name in dir(SoftTargetSource) if not name.startswith("_")}
    for source in (TeacherClient, LocalTeachers, StoredTeachers):
        assert wanted <= set(dir(source)) | {"teacher_set"}, source


def test_in_worker_teachers_answer_planned_batches_through_the_interface(tmp_path):
    teacher_set, apps = _teacher_set(tmp_path)
    control = LocalRunControl(teacher_set, apps)
    source = LocalTeachers(control.teacher_apps(), control.teacher_set(), output_space=f"classes:{CLASSES}",
                           temperature=4.0)
    batches = plan_epoch(_split(), epoch=0, seed=0, shard=0, num_shards=1, batch_size=8)
    source.plan(batches)
    targets = source.targets_for(batches[0])
    assert targets.names == ["mlp"] and targets.records["mlp"].batch_id == batches[0].batch_id
    assert targets.records["mlp"].batch_size == 8 and not source.at_step_boundary()
    assert "teacher/mlp/latency_ms" not in source.metrics()  # only served teachers have a round trip


def test_local_teachers_answer_at_the_runs_temperature_and_the_shared_check_refuses_another(tmp_path):
    teacher_set, apps = _teacher_set(tmp_path, temperature=2.0)
    source = LocalTeachers(apps, teacher_set, output_space=f"classes:{CLASSES}", temperature=4.0)
    batch = plan_epoch(_split(), epoch=0, seed=0, shard=0, num_shards=1, batch_size=8)[0]
    record = source.targets_for(batch).records["mlp"]
    assert record.temperature == 4.0
    with pytest.raises(SoftTargetError, match="temperature 2.0 differs from the run's 4.0"):
        source.checked(replace(record, temperature=2.0), batch, None)


def test_stop_is_read_only_at_its_steps():
    control = LocalRunControl()
    stop = StopCheck(control, every=5, device=torch.device("cpu"))
    assert not stop(5)
    control.stop = True
    assert not stop(7) and stop(10)


def test_progress_records_carry_the_sources_metrics_and_the_terms(tmp_path):
    teacher_set, apps = _teacher_set(tmp_path)
    control = LocalRunControl(teacher_set, apps)
    source = LocalTeachers(apps, teacher_set, output_space=f"classes:{CLASSES}", temperature=4.0)
    source.wait_ms["mlp"] = 1.5
    progress = ProgressReporter(control, "kd-seed0", None, "samples", rank=0, world_size=2)
    progress.add({"total": torch.tensor(2.0), "kd": torch.tensor(1.0), "teacher_weight/mlp": torch.tensor(1.0)}, 8)
    progress.flush(ClientState(phase="kd-seed0", step=10), source, {"eval/test_accuracy": 0.5})
    record, = control.records
    assert record["loss/kd"] == 1.0 and record["teacher/mlp/effective_weight"] == 1.0
    assert record["teacher/mlp/wait_ms"] == 1.5 and record["teacher_set/version"] == teacher_set.version
    assert record["step"] == 10 and record["eval/test_accuracy"] == 0.5 and "throughput/samples_per_s" in record


def _phase(control, name: str = "kd-b-seed0", rank: int = 0) -> Phase:
    model = torch.nn.Linear(4, 3)
    engine = SimpleNamespace(module=SimpleNamespace(model=model))
    return Phase(name, 0, control, rank, 1, engine, _split(), 4.0)


def test_born_again_hooks_hand_the_student_over_and_read_only_the_snapshot():
    control = LocalRunControl()
    first = _phase(control, "kd-a-seed0")
    SnapshotExport().after_phase(first)
    assert torch.equal(control.snapshot_weights("kd-a-seed0")["weight"], first.model.weight)
    hook = SnapshotTeacher("kd-a-seed0")
    second = _phase(control)
    hook.before_phase(second)
    assert control.served == {"kd-a-seed0"} and hook.teachers() == {snapshot_teacher_name("kd-a-seed0")}
    hook.after_phase(second)
    assert control.served == set()
    SnapshotExport().after_phase(_phase(control, "kd-c-seed0", rank=1))  # only rank 0 hands over
    assert "kd-c-seed0" not in control.snapshots


def test_a_continual_task_starts_from_the_previous_student():
    control = LocalRunControl()
    previous = _phase(control, "kd-task0-seed0")
    SnapshotExport().after_phase(previous)
    model = torch.nn.Linear(4, 3)
    InitFrom("kd-task0-seed0").prepare_model(model, control)
    assert torch.equal(model.weight, previous.model.weight)
    with pytest.raises(FileNotFoundError, match="kd-task9-seed0"):
        InitFrom("kd-task9-seed0").prepare_model(model, control)
    with pytest.raises(FileNotFoundError, match="no stored memory targets"):
        MemoryReplay(("kd-task0-seed0",)).start(_phase(control), {})


def test_a_co_training_peer_publishes_on_schedule_and_ends_its_round():
    control = LocalRunControl()
    hook = CoTraining(OnlineRole(peer="a", round=0, learns_from=("b",), publishes=True, refresh_every=2,
                                 max_staleness=4, timeout_s=1.0))
    phase = _phase(control, "mutual-a-seed0")
    hook.before_phase(phase)
    for step in range(1, 6):
        hook.after_step(phase, step, None)
    assert control.published["a"] == (0, 4) and hook.log_metrics()["online/published_step"] == 4
    phase.step = 5
    hook.after_training(phase)
    assert control.published["a"] == (0, 5) and ("a", 0) in control.rounds
    assert hook.final_metrics(phase, None)["online_publications"] == 4  # start, steps 2 and 4, the end
