"""`distillery audit` from the processes' own audit files: the writer (local appends, segments on
object storage) and the checks (rollback on resume, lost, duplicated, unplanned, stale,
unanswered), on records written the way the workers, replicas and orchestrator write them."""

from __future__ import annotations

from cluster import AuditLog, read_audit
from orchestration.audit import audit_records


class _Run:
    """Writes a run's audit files as its processes would: one file per process."""

    def __init__(self, folder, world_size: int = 2, epochs: int = 2, batches: int = 3):
        self.folder, self.world_size, self.epochs, self.batches = str(folder), world_size, epochs, batches
        self.sets = AuditLog(self.folder, "teacher-set-orch")
        self.replica = AuditLog(self.folder, "answered-mlp-r1")
        self.workers: dict[int, AuditLog] = {}
        self.attempt = 0

    def teacher_set(self, version: int, **teachers: str) -> None:
        self.sets.write({"kind": "teacher_set", "version": version, "teachers": teachers, "live": []})

    def start_workers(self, resumed_from: int = 0, ranks=None) -> None:
        self.attempt += 1
        for rank in range(self.world_size) if ranks is None else ranks:
            self.workers[rank] = AuditLog(self.folder, f"applied-rank{rank}-attempt{self.attempt}")
            self.workers[rank].write({"kind": "start", "phase": "kd", "rank": rank, "world_size": self.world_size,
                                      "resumed_from": resumed_from, "epochs": self.epochs,
                                      "batches_per_epoch": self.batches})

    def step(self, rank: int, step: int, batch: str, version: int = 1, answered: bool = True,
             teachers: dict | None = None) -> None:
        teachers = {"mlp": "mlp-v1"} if teachers is None else teachers
        if answered:
            self.replica.write({"kind": "answered", "teacher": "mlp", "version": "mlp-v1", "set": version,
                                "phase": "kd", "batches": [batch]})
        self.workers[rank].write({"kind": "applied", "phase": "kd", "rank": rank, "step": step, "batch": batch,
                                  "set": version, "teachers": teachers})

    def steps(self, first: int, last: int) -> None:
        """Steps `first`..`last` of both ranks, each on its planned batch."""
        for step in range(first, last + 1):
            epoch, index = divmod(step - 1, self.batches)
            for rank in range(self.world_size):
                self.step(rank, step, f"e{epoch}-s{rank}-b{index}")

    def end(self, step: int, stopped: bool = False) -> None:
        for rank, log in self.workers.items():
            log.write({"kind": "end", "phase": "kd", "rank": rank, "step": step, "stopped": stopped})

    def audit(self):
        (phase,) = audit_records(read_audit(self.folder))
        return phase


def test_a_clean_run_is_exactly_once(tmp_path):
    run = _Run(tmp_path)
    run.teacher_set(1, mlp="mlp-v1")
    run.start_workers()
    run.steps(1, 6)
    run.end(6)
    phase = run.audit()
    assert (phase.planned, phase.applied, phase.finished, phase.problems) == (12, 12, True, {})
    assert phase.answers_checked == 12 and phase.line().endswith("exactly once")


def test_a_resume_rolls_back_what_followed_its_checkpoint_and_replays_it(tmp_path):
    run = _Run(tmp_path)
    run.teacher_set(1, mlp="mlp-v1")
    run.start_workers()
    run.steps(1, 5)  # killed after step 5; the checkpoint was at step 2
    run.start_workers(resumed_from=2)
    run.steps(3, 6)
    run.end(6)
    phase = run.audit()
    assert phase.problems == {} and phase.applied == 12 and phase.rolled_back == 6


def test_lost_duplicated_and_unplanned_batches_are_named(tmp_path):
    run = _Run(tmp_path)
    run.teacher_set(1, mlp="mlp-v1")
    run.start_workers()
    run.steps(1, 3)
    run.step(0, 4, "e0-s0-b0")  # rank 0 applies its first batch again instead of e1-s0-b0
    run.step(1, 4, "e1-s1-b0")
    run.steps(5, 6)
    run.step(1, 7, "e9-s1-b9")  # a batch outside the plan
    run.end(7)
    phase = run.audit()
    assert phase.duplicated == ["e0-s0-b0"] and phase.lost == ["e1-s0-b0"] and phase.unplanned == ["e9-s1-b9"]
    assert "1 lost (e1-s0-b0)" in phase.line()


def test_a_replay_without_its_rollback_is_a_duplicate(tmp_path):
    """A worker that re-applies steps after a restart but did not resume from the checkpoint it
    claims shows up: its start says step 6, so nothing is rolled back, and the replayed batches
    count twice."""
    run = _Run(tmp_path)
    run.teacher_set(1, mlp="mlp-v1")
    run.start_workers()
    run.steps(1, 3)
    run.start_workers(resumed_from=3)
    for rank in range(2):  # steps 4 and 5 apply the batches of steps 1 and 2 again
        run.step(rank, 4, f"e0-s{rank}-b0")
        run.step(rank, 5, f"e0-s{rank}-b1")
    run.end(5, stopped=True)
    phase = run.audit()
    assert phase.duplicated == ["e0-s0-b0", "e0-s0-b1", "e0-s1-b0", "e0-s1-b1"]
    assert phase.lost == ["e1-s0-b0", "e1-s0-b1", "e1-s1-b0", "e1-s1-b1"]


def test_stale_and_unanswered_applications(tmp_path):
    run = _Run(tmp_path, world_size=1, epochs=1, batches=4)
    run.teacher_set(1, mlp="mlp-v1", cnn="cnn-v1")
    run.teacher_set(2, mlp="mlp-v1")  # cnn removed
    run.start_workers()
    run.step(0, 1, "e0-s0-b0", version=1, teachers={"mlp": "mlp-v1", "cnn": "cnn-v1"})
    run.step(0, 2, "e0-s0-b1", version=2, teachers={"mlp": "mlp-v1", "cnn": "cnn-v1"})  # cnn no longer in v2
    run.step(0, 3, "e0-s0-b2", version=2, answered=False)  # no replica answered it
    run.step(0, 4, "e0-s0-b3", version=2, teachers={"mlp": "mlp-v0"})  # another model version
    run.end(4)
    phase = run.audit()
    assert phase.stale == ["e0-s0-b1@rank0", "e0-s0-b3@rank0"] and phase.unanswered == ["e0-s0-b2@rank0"]
    assert not phase.lost and not phase.duplicated


def test_another_phases_answer_for_the_same_batch_id_does_not_stand_in(tmp_path):
    """Batch ids repeat across phases: a replica's answer counts for the phase its request
    named; a line naming no phase (a caller that sends none) counts for any."""
    run = _Run(tmp_path, world_size=1, epochs=1, batches=4)
    run.teacher_set(1, mlp="mlp-v1")
    run.start_workers()
    for step in range(1, 5):
        run.step(0, step, f"e0-s0-b{step - 1}", answered=False)
    for batch in ("e0-s0-b0", "e0-s0-b1", "e0-s0-b2"):  # the same ids, answered for another phase
        run.replica.write({"kind": "answered", "teacher": "mlp", "version": "mlp-v1", "set": 1, "phase": "kd-seed1",
                           "batches": [batch]})
    run.replica.write({"kind": "answered", "teacher": "mlp", "version": "mlp-v1", "set": 1, "batches": ["e0-s0-b2"]})
    run.end(4)
    assert run.audit().unanswered == ["e0-s0-b0@rank0", "e0-s0-b1@rank0", "e0-s0-b3@rank0"]


def test_a_stopped_phase_planned_what_it_reached_and_a_silent_rank_loses_its_plan(tmp_path):
    run = _Run(tmp_path, world_size=3)
    run.teacher_set(1, mlp="mlp-v1")
    run.start_workers(ranks=(0, 1))  # rank 2 never wrote: its whole plan is lost
    for step in (1, 2):
        for rank in (0, 1):
            run.step(rank, step, f"e0-s{rank}-b{step - 1}")
    run.end(2, stopped=True)
    phase = run.audit()
    assert phase.finished and phase.planned == 4 + 6 and phase.lost == [f"e{e}-s2-b{i}" for e in (0, 1) for i in range(3)]


def test_the_audit_on_object_storage_is_uploaded_in_segments(s3_server):
    _, options = s3_server
    folder = f"s3://runs-data/audit-run/audit?{options}"
    log = AuditLog(folder, "applied-rank0-x", flush_s=3600)
    log.write({"kind": "start", "phase": "kd", "rank": 0, "world_size": 1, "resumed_from": 0, "epochs": 1,
               "batches_per_epoch": 2})
    log.write({"kind": "applied", "phase": "kd", "rank": 0, "step": 1, "batch": "e0-s0-b0", "set": None,
               "teachers": {}})
    assert read_audit(folder) == []  # not uploaded before its flush interval or its close
    log.close()
    eager = AuditLog(folder, "applied-rank0-y", flush_s=0)
    eager.write({"kind": "applied", "phase": "kd", "rank": 0, "step": 2, "batch": "e0-s0-b1", "set": None,
                 "teachers": {}})
    (phase,) = audit_records(read_audit(folder))
    assert (phase.planned, phase.applied, phase.finished, phase.problems) == (2, 2, False, {})
