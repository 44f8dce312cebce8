"""`distillery audit`: exactly-once, checked from the processes' own audit files alone.

Every train worker appended the batch ids it applied, every teacher replica the batch ids it
answered, the orchestrator each teacher set it made (`cluster.audit_log`). This module reads
nothing else: not the train loop's ledger, not its checkpoints, not its metrics.

Per phase it rebuilds what counts:
- **the applications that stand.** A rank's records are read in time order; a record for a
  step the rank had already passed, or a phase start that resumed from step S, rolls back
  what came after (a resumed run restarts from its checkpoint, and the weights of the steps
  after it are gone). The last record of each step wins.
- **the plan.** Each start record gives the plan's shape (ranks, epochs, batches per epoch);
  the planned ids (`ingest.BatchId`) are made from it and compared with the ids the records name. A phase ended by `distillery stop`, or not ended
  yet, planned what its ranks reached; a streamed source's plan is what its stream delivered,
  which the audit cannot know, so its lost batches are not counted.

and reports per phase: **lost** (planned, never applied), **duplicated** (applied more than
once over every rank), **unplanned** (applied, not in the plan), **stale** (applied with a
teacher's targets that the worker's teacher set did not hold at that version: a removed
teacher, another model version), **unanswered** (applied with a served teacher's targets that
no replica of that teacher recorded answering).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from ingest import BatchId

SHOWN = 5  # ids named per problem in the report


@dataclass
class PhaseAudit:
    phase: str
    finished: bool
    planned: Optional[int]  # None: a streamed source (the plan is what its stream delivered)
    applied: int
    rolled_back: int  # applications undone by a resume (the run restarted from an earlier checkpoint)
    answers_checked: int = 0  # (application, served teacher) pairs matched to a replica's recorded answer
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, list[str]]:
        return {name: ids for name in ("lost", "duplicated", "unplanned", "stale", "unanswered")
                if (ids := getattr(self, name))}

    def line(self) -> str:
        head = (f"{self.phase}: {self.applied} applied of {'?' if self.planned is None else self.planned} planned"
                f"{'' if self.finished else ' (unfinished)'}, {self.rolled_back} rolled back by a resume, "
                f"{self.answers_checked} teacher answers matched")
        found = [f"{len(ids)} {name} ({', '.join(ids[:SHOWN])}{', ...' if len(ids) > SHOWN else ''})"
                 for name, ids in self.problems.items()]
        return head + (": " + "; ".join(found) if found else ": exactly once")


def _standing(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, Optional[dict], Optional[dict]]:
    """One rank's applications that stand (by step), how many were rolled back, its last start
    and its end record (None when the phase did not end after that start)."""
    standing: dict[int, dict[str, Any]] = {}
    rolled_back, start, end = 0, None, None
    for event in events:
        cut = {"start": event.get("resumed_from", 0) + 1, "applied": event.get("step")}.get(event["kind"])
        if cut is not None:
            undone = [step for step in standing if step >= cut]
            rolled_back += len(undone)
            for step in undone:
                del standing[step]
        if event["kind"] == "start":
            start, end = event, None
        elif event["kind"] == "applied":
            standing[event["step"]] = event
        elif event["kind"] == "end":
            end = event
    return [standing[step] for step in sorted(standing)], rolled_back, start, end


def _planned(start: dict[str, Any], rank: int, reached: int) -> list[BatchId]:
    """The first `reached` batch ids of `rank`'s plan, from the plan's shape."""
    ids = (BatchId.planned(epoch, rank, index) for epoch in range(start["epochs"])
           for index in range(start["batches_per_epoch"]))
    return [next(ids) for _ in range(min(reached, start["epochs"] * start["batches_per_epoch"]))]


class SetHistory:
    """The teacher sets the orchestrator made. A restarted driver makes its versions again on the
    way to the one it restores, so a version means the set of that number made last before the
    application (the earliest, where a clock between nodes put the application first)."""

    def __init__(self, records: list[dict[str, Any]]):
        self._made: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for record in records:  # in time order
            self._made[record["version"]].append(record)

    def at(self, version: Optional[int], t: float) -> Optional[dict[str, Any]]:
        made = self._made.get(version)
        if not made:
            return None
        before = [record for record in made if record["t"] <= t]
        return before[-1] if before else made[0]


def _teacher_problem(applied: dict[str, Any], sets: SetHistory,
                     answers: dict[tuple[str, Optional[str], BatchId], set[str]], answering: set[str]) -> Optional[str]:
    """'stale' or 'unanswered' for one application, or None when its targets check out."""
    members = sets.at(applied.get("set"), applied["t"])
    for teacher, version in applied.get("teachers", {}).items():
        if members is not None:
            expected = members["teachers"].get(teacher)
            live = teacher in members.get("live", ())
            if expected is None or not (version.startswith(f"{expected}@") if live else version == expected):
                return "stale"
        if teacher in answering and version not in _answered(answers, teacher, applied):
            return "unanswered"
    return None


def _answered(answers: dict[tuple[str, Optional[str], BatchId], set[str]], teacher: str,
              applied: dict[str, Any]) -> set[str]:
    """The versions `teacher`'s replicas recorded answering the application's batch with: lines
    naming its phase, and lines naming none (a caller that sent no phase, such as a gRPC client)."""
    batch = BatchId.parse(applied["batch"])
    return answers.get((teacher, applied["phase"], batch), set()) | answers.get((teacher, None, batch), set())


def audit_phase(phase: str, events: list[dict[str, Any]], sets: SetHistory,
                answers: dict[tuple[str, Optional[str], BatchId], set[str]], answering: set[str]) -> PhaseAudit:
    by_rank: dict[int, list[dict]] = defaultdict(list)
    for event in events:
        by_rank[event["rank"]].append(event)
    standing, planned, rolled_back, finished, streamed = [], [], 0, True, False
    for rank, rank_events in sorted(by_rank.items()):
        applied, undone, start, end = _standing(rank_events)
        standing += applied
        rolled_back += undone
        finished = finished and end is not None
        if start is None or start.get("batches_per_epoch") is None:
            streamed = True
            continue
        world = start["world_size"]
        missing_ranks = set(range(world)) - set(by_rank)
        if missing_ranks and rank == min(by_rank):  # a rank that never started: its whole plan is lost
            for absent in sorted(missing_ranks):
                planned += _planned(start, absent, start["epochs"] * start["batches_per_epoch"])
        whole = end is not None and not end.get("stopped")
        reached = start["epochs"] * start["batches_per_epoch"] if whole else max([a["step"] for a in applied] or [0])
        planned += _planned(start, rank, reached)
    counts = Counter(BatchId.parse(a["batch"]) for a in standing)
    plan = set(planned)
    result = PhaseAudit(phase, finished, None if streamed else len(planned), len(standing), rolled_back,
                        duplicated=[str(b) for b in sorted(b for b, n in counts.items() if n > 1)],
                        unplanned=[] if streamed else [str(b) for b in sorted(set(counts) - plan)],
                        lost=[] if streamed else [str(b) for b in planned if b not in counts])
    for applied in standing:
        result.answers_checked += sum(teacher in answering for teacher in applied.get("teachers", {}))
        problem = _teacher_problem(applied, sets, answers, answering)
        if problem is not None:
            getattr(result, problem).append(f"{applied['batch']}@rank{applied['rank']}")
    return result


def audit_records(records: Iterable[dict[str, Any]]) -> list[PhaseAudit]:
    """Every phase's audit from the records of a run's audit files (`cluster.read_audit`)."""
    records = sorted(records, key=lambda r: (r["t"], r.get("file", ""), r.get("seq", 0)))
    sets = SetHistory([r for r in records if r["kind"] == "teacher_set"])
    answers: dict[tuple[str, Optional[str], BatchId], set[str]] = defaultdict(set)
    for record in records:  # keyed by phase too: batch ids repeat across phases (None: a caller naming none)
        if record["kind"] == "answered":
            for batch in record["batches"]:
                answers[(record["teacher"], record.get("phase"), BatchId.parse(batch))].add(record["version"])
    answering = {teacher for teacher, _, _ in answers}
    phases: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record["kind"] in ("start", "applied", "end"):
            phases[record["phase"]].append(record)
    return [audit_phase(phase, events, sets, answers, answering) for phase, events in phases.items()]


def audit_run(location: str) -> tuple[list[PhaseAudit], dict[str, Any]]:
    """The audit of the run whose audit folder is `location` (a path or a URI), with its summary."""
    from cluster import read_audit

    audits = audit_records(read_audit(location))
    return audits, audit_summary(audits)


def audit_summary(audits: list[PhaseAudit]) -> dict[str, Any]:
    """What `distillery audit --json` prints: per phase its counts and the ids of each problem."""
    return {"phases": {a.phase: {k: v for k, v in asdict(a).items() if k != "phase"} for a in audits},
            "exactly_once": not any(a.problems for a in audits)}
