"""TeacherClient: how a train worker gets soft targets from the current teacher set.

The client keeps the next `prefetch` batches requested from every teacher, `batches_per_request`
batches to a request, so teacher latency hides behind student compute and the fixed cost of a
Serve call is spread over several batches. It learns the teacher set from the run (a
`TeacherSetSource` passed in by the caller: the worker's run control) with a non-blocking
version poll at step boundaries: a new or removed teacher takes effect at the first boundary
after the orchestrator's bump arrives. It is the served implementation of
`teachers.target_source.SoftTargetSource`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from ray import serve

from ingest import Batch
from teachers.errors import NoTeacherError, SoftTargetError, TeacherAuthError, TeacherUnavailableError
from teachers.grpc_client import GrpcTeacher
from teachers.target_source import RecordSource, TeacherSetSource
from teachers.targets import TeacherTargets
from teachers.teacher_set import TeacherEntry, TeacherSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultPolicy:
    """What the client does when a teacher fails (the `distill` keys of the same names)."""

    retries: int = 2
    slow_teacher_fallback: bool = True
    on_teacher_lost: str = "drop"  # or "fail", or "wait" (keep asking until it is back, up to pause_timeout_s)
    on_no_teacher: str = "fail"  # or "pause"
    pause_timeout_s: float = 600.0

    @classmethod
    def of(cls, distill: Any) -> "FaultPolicy":
        return cls(distill.request_retries, distill.slow_teacher_fallback, distill.on_teacher_lost,
                   distill.on_no_teacher, distill.pause_timeout_s)


LATENCY_WINDOW = 16  # requests per teacher behind `latency_ms`
_LATE = object()  # a teacher missed its deadline for a batch that goes on without it


def _backoff_s(attempt: int) -> float:
    return min(2.0, 0.1 * 2 ** attempt)


class _Request:
    """One request to one teacher for several consecutive batches; answered once, read per batch.

    `latency_s` is the round trip: from the send to the first moment the client saw the answer,
    which `poll()` (called at every batch) or a blocking `record()` notices; `on_answer` gets it
    then, once."""

    def __init__(self, response: Any, batches: list[Batch], on_answer: Callable[[float], None] = lambda s: None):
        self.response = response
        self.batches = batches
        self.batch_ids = [b.batch_id for b in batches]
        self._records: Optional[dict[str, Any]] = None
        self._sent_at = time.perf_counter()
        self._on_answer = on_answer
        self.latency_s: Optional[float] = None

    def _answered(self, records: list[Any]) -> None:
        self._records = dict(zip(self.batch_ids, records))
        self.latency_s = time.perf_counter() - self._sent_at
        self._on_answer(self.latency_s)

    def poll(self) -> bool:
        """Take the answer if it has arrived, without waiting; True the first time it has."""
        if self._records is not None:
            return False
        try:
            self._answered(self.response.result(timeout_s=0))
        except Exception:  # noqa: BLE001 - not there yet, or failed: `record()` raises it in turn
            return False
        return True

    def record(self, batch_id: str, timeout_s: float) -> Any:
        if self._records is None:
            self._answered(self.response.result(timeout_s=timeout_s))
        return self._records[batch_id]

    def cancel(self) -> None:
        """Best effort: a request that already failed has nothing left to cancel."""
        if self._records is None:
            try:
                self.response.cancel()
            except Exception:  # noqa: BLE001 - Serve re-raises the request's own failure here
                pass


class TeacherClient(RecordSource):
    """Args:
        control: the run's teacher set (`teacher_set()`, `teacher_set_version_nowait()`,
            `teacher_lost()`).
        output_space: the student's output space id; records must match it.
        temperature: the run's KD temperature; records must carry it.
        prefetch: batches requested ahead of the one being trained on, per teacher.
        batches_per_request: batches one request carries.
        timeout_s: deadline for one teacher answer.
        top_k, dense_max_classes, target_kind: what teachers are asked to send (a KD method
            may ask for its own k, for dense targets, or for k sampled tokens instead of the top k).
        only: the teachers of the set this client uses (all when None); a born-again phase
            reads only its snapshot teacher.
        policy: retries, fallback and what to do when a teacher is lost or none is left.
        phase: the run phase the batches belong to, named in every request (batch ids repeat
            across phases; a replica's answer line names the phase, and the audit matches by it).

    A request that fails (a replica died, Serve's queue was full, the call errored) is sent
    again, to whichever replica Serve picks, `policy.retries` times with backoff; a rejection
    by Serve's queue limit (back-pressure) is retried until the deadline without counting.
    A request that misses its deadline while other teachers answered the batch is left out of
    that batch (`fallback_batches`) when `policy.slow_teacher_fallback`; a teacher that misses
    more than `policy.retries` deadlines in a row, or fails more than `policy.retries` times
    for one batch, is lost: reported to the orchestrator, which drops it from the teacher set
    (`on_teacher_lost: drop`), or the run fails. Malformed soft targets are never retried:
    they raise `SoftTargetError` before the student sees them.
    """

    def __init__(self, control: TeacherSetSource, *, output_space: str, temperature: float, prefetch: int = 8,
                 batches_per_request: int = 4, timeout_s: float = 60.0, top_k: int = 0, dense_max_classes: int = 0,
                 target_kind: str = "topk", only: Optional[set[str]] = None, policy: FaultPolicy = FaultPolicy(),
                 phase: Optional[str] = None):
        super().__init__(TeacherSet(), output_space=output_space, temperature=temperature, target_kind=target_kind)
        self._control = control
        self.phase = phase  # named in every request: a replica's answer line says which phase's batch it was
        self.prefetch = max(prefetch, batches_per_request)
        self.batches_per_request = batches_per_request
        self.timeout_s = timeout_s
        self.top_k, self.dense_max_classes = top_k, dense_max_classes
        self.only = only
        self._handles: dict[str, Any] = {}
        self._plan: Iterator[Batch] = iter(())
        self._plan_done = True
        self._upcoming: deque[Batch] = deque()  # the prefetch window, oldest first
        self._in_flight: dict[tuple[str, str], _Request] = {}
        self._latencies: dict[str, deque[float]] = {}
        self.policy = policy
        self.faults = {"retries": 0, "backpressure_retries": 0, "fallback_batches": 0, "teachers_lost": 0,
                       "teachers_waited_for": 0, "paused_s": 0.0, "longest_recovery_s": 0.0}
        self._late_in_a_row: dict[str, int] = {}
        self._unreachable_since: dict[str, float] = {}  # on_teacher_lost: wait; teachers past their retries
        self.refresh(control.teacher_set())

    # --- teacher set -------------------------------------------------------------------------
    def refresh(self, teacher_set: TeacherSet) -> bool:
        """Adopt `teacher_set` if it is newer; return whether anything changed."""
        teacher_set = teacher_set.only(self.only)
        if teacher_set.version <= self.teacher_set.version and self._handles:
            return False
        for name in set(self._handles) - set(teacher_set.teachers):
            handle = self._handles.pop(name)
            for request in {self._in_flight.pop(k) for k in list(self._in_flight) if k[1] == name}:
                request.cancel()
            if isinstance(handle, GrpcTeacher):
                handle.close()
        for name, entry in teacher_set.teachers.items():
            if name not in self._handles:
                self._handles[name] = self._connect(entry)
        changed = teacher_set.version != self.teacher_set.version
        if changed:
            logger.info("teacher set v%d: %s", teacher_set.version, sorted(teacher_set.teachers))
        self.teacher_set = teacher_set
        self._fill()
        return changed

    def _connect(self, entry: TeacherEntry) -> Any:
        """A Serve app handle, or a gRPC client for an external endpoint (same interface)."""
        if entry.endpoint is None:
            return serve.get_app_handle(entry.app_name)
        return GrpcTeacher(entry.endpoint, name=entry.name, timeout_s=self.timeout_s, temperature=self.temperature,
                           top_k=self.top_k, dense_max_classes=self.dense_max_classes, target_kind=self.target_kind,
                           max_in_flight=max(2, self.prefetch // self.batches_per_request + 1))

    def at_step_boundary(self) -> bool:
        """Cheap check for a new teacher-set version (never blocks on the orchestrator)."""
        version = self._control.teacher_set_version_nowait()
        if version is None or version == self.teacher_set.version:
            return False
        return self.refresh(self._control.teacher_set())

    # --- batches -----------------------------------------------------------------------------
    def plan(self, batches: Iterable[Batch]) -> None:
        """Announce the batches this worker will ask for next, in order (read lazily, so a plan
        may span every remaining epoch and requests run ahead across epoch boundaries)."""
        self._plan, self._plan_done = iter(batches), False
        self._upcoming.clear()
        self._fill()

    def _submit(self, batches: list[Batch], teacher: str) -> _Request:
        payload = {"batches": [b.payload() for b in batches],
                   "temperature": self.temperature, "top_k": self.top_k, "dense_max_classes": self.dense_max_classes,
                   "target_kind": self.target_kind, "teacher_set_version": self.teacher_set.version,
                   "phase": self.phase}
        request = _Request(self._handles[teacher].remote(payload), batches,
                           on_answer=lambda latency_s: self._note_latency(teacher, latency_s))
        for batch in batches:
            self._in_flight[(batch.batch_id, teacher)] = request
        return request

    def _fill(self) -> None:
        """Request the batches of the prefetch window that no request covers yet, in full groups
        (a shorter one only where the plan ends inside the window)."""
        while not self._plan_done and len(self._upcoming) < self.prefetch:
            batch = next(self._plan, None)
            if batch is None:
                self._plan_done = True
            else:
                self._upcoming.append(batch)
        for name in self._handles:
            missing = [b for b in self._upcoming if (b.batch_id, name) not in self._in_flight]
            while len(missing) >= self.batches_per_request or (missing and self._plan_done):
                self._submit(missing[: self.batches_per_request], name)
                missing = missing[self.batches_per_request:]

    def request(self, batch: Batch) -> None:
        """Ask every current teacher now for a batch outside the plan (e.g. generated inputs);
        `targets_for(batch)` collects the answer."""
        for name in self._handles:
            if (batch.batch_id, name) not in self._in_flight:
                self._submit([batch], name)

    def score_proposals(self, sequences: np.ndarray, start: np.ndarray, *, top_k: int, temperature: float,
                        seed: int, teacher: Optional[str] = None) -> dict[str, Any]:
        """Speculative KD: one teacher's verdict on student-proposed tokens (its Serve app's
        `score_proposals`); `teacher` defaults to the first of the set."""
        name = teacher or next(iter(sorted(self._handles)), None)
        if name is None or name not in self._handles:
            raise TeacherUnavailableError(f"speculative KD needs teacher {teacher or '(any)'!r} in the teacher set; "
                                          f"it has {sorted(self._handles)}")
        handle = self._handles[name]
        if isinstance(handle, GrpcTeacher):
            raise TeacherUnavailableError(f"teacher {name!r} is an external gRPC endpoint; speculative KD's scoring "
                                          f"call needs a Serve teacher of the run")
        return handle.score_proposals.remote(sequences, start, top_k, temperature, seed).result(
            timeout_s=self.timeout_s)

    def targets_for(self, batch: Batch) -> TeacherTargets:
        """The validated, weighted records of the current teachers for `batch`. Never empty: with
        no teacher left the client fails or pauses (`policy.on_no_teacher`)."""
        if self._upcoming and self._upcoming[0].batch_id == batch.batch_id:
            self._upcoming.popleft()
        self._poll()
        while True:
            self._wait_for_teachers(batch)
            records, late = {}, []
            for name in list(self._handles):
                outcome = self._collect(name, batch, may_skip=self.policy.slow_teacher_fallback and len(self._handles) > 1)
                if outcome is _LATE:
                    late.append(name)
                elif outcome is not None:
                    records[name] = outcome
            if late and not records:  # nobody answered in time: no fallback, wait for the retries
                for name in late:
                    if name in self._handles and (outcome := self._collect(name, batch, may_skip=False)) is not None:
                        records[name] = outcome
            elif late:
                self.faults["fallback_batches"] += 1
            self._fill()
            if records:
                return TeacherTargets(records, self.teacher_set.weights())

    def _collect(self, name: str, batch: Batch, *, may_skip: bool):
        """One teacher's record for `batch`, retried as the policy says; `_LATE` when it missed
        its deadline and `may_skip`; None when the teacher left the set meanwhile."""
        attempt, backpressure_since, failed_at = 0, None, None
        while True:
            key = (batch.batch_id, name)
            request = self._in_flight.get(key) or self._submit([batch], name)
            start = time.perf_counter()
            try:
                raw = request.record(batch.batch_id, self.timeout_s)
            except (SoftTargetError, TeacherAuthError):
                raise  # bad payloads and refused credentials are not transient
            except Exception as exc:  # noqa: BLE001 - a dead replica, a full queue, a missed deadline
                failed_at = failed_at or time.monotonic()
                if self._left_the_set(name):
                    return None
                if isinstance(exc, serve.exceptions.BackPressureError):
                    backpressure_since = backpressure_since or time.monotonic()
                    if time.monotonic() - backpressure_since < self.timeout_s:
                        self.faults["backpressure_retries"] += 1
                        self._resend(request, name)
                        time.sleep(_backoff_s(0))
                        continue
                if isinstance(exc, TimeoutError) and may_skip:
                    self._late_in_a_row[name] = self._late_in_a_row.get(name, 0) + 1
                    self._resend(request, name, skip=batch.batch_id)
                    if self._late_in_a_row[name] > self.policy.retries and not self._waits_for(name, batch, exc):
                        self._lose(name, batch, exc)
                        return None
                    return _LATE
                attempt += 1
                if attempt > self.policy.retries and not self._waits_for(name, batch, exc):
                    self._lose(name, batch, exc)
                    return None
                self.faults["retries"] += 1
                if attempt <= self.policy.retries:  # past them, `_waits_for` said it once
                    logger.warning("teacher %r, batch %r: %s: %s; retry %d of %d", name, batch.batch_id,
                                   type(exc).__name__, exc, attempt, self.policy.retries)
                time.sleep(_backoff_s(attempt))
                self._resend(request, name)
                continue
            del self._in_flight[key]
            self._late_in_a_row[name] = 0
            if self._unreachable_since.pop(name, None) is not None:
                logger.warning("teacher %r answers again (batch %r)", name, batch.batch_id)
            if failed_at is not None:  # answered after retries: how long the batch waited for it
                self.faults["longest_recovery_s"] = max(self.faults["longest_recovery_s"], time.monotonic() - failed_at)
            self.wait_ms[name] = (time.perf_counter() - start) * 1000
            return self._validated(name, batch, raw)

    def _validated(self, name: str, batch: Batch, record: Any):
        entry = self.teacher_set.teachers[name]
        record = self.checked(record, batch, None if entry.live else entry.model_version)
        if entry.live and not record.teacher_version.startswith(f"{entry.model_version}@"):
            raise TeacherUnavailableError(f"teacher {name!r} answered batch {batch.batch_id!r} with version "
                                          f"{record.teacher_version!r}, not a version of {entry.model_version!r}")
        return record

    def _resend(self, request: _Request, teacher: str, skip: Optional[str] = None) -> None:
        """Drop a failed request and ask again for the batches it still owed (but `skip`)."""
        owed = [b for b in request.batches if self._in_flight.get((b.batch_id, teacher)) is request]
        for b in owed:
            del self._in_flight[(b.batch_id, teacher)]
        request.cancel()
        owed = [b for b in owed if b.batch_id != skip]
        if owed:
            self._submit(owed, teacher)

    def _left_the_set(self, name: str) -> bool:
        """Whether the orchestrator no longer lists `name` (removed, or lost by another worker)."""
        latest = self._control.teacher_set()
        if name in latest.teachers:
            return False
        self.refresh(latest)
        return True

    def _waits_for(self, name: str, batch: Batch, exc: BaseException) -> bool:
        """`on_teacher_lost: wait`: a teacher past its retries stays in the set and is asked again
        (its Serve app reschedules its replicas once the cluster has room for them, e.g. when its
        node is back) until `pause_timeout_s` after it stopped answering; then the run fails."""
        if self.policy.on_teacher_lost != "wait":
            return False
        now = time.monotonic()
        since = self._unreachable_since.setdefault(name, now)
        if since == now:
            self.faults["teachers_waited_for"] += 1
            logger.warning("teacher %r gave no soft targets for batch %r after %d retries (%s: %s); waiting up to "
                           "%.0fs for it to come back (distill.on_teacher_lost: wait)", name, batch.batch_id,
                           self.policy.retries, type(exc).__name__, exc, self.policy.pause_timeout_s)
        if now - since > self.policy.pause_timeout_s:
            raise TeacherUnavailableError(
                f"teacher {name!r} gave no soft targets for {now - since:.0f}s (last batch {batch.batch_id!r}: "
                f"{type(exc).__name__}: {exc}), longer than distill.pause_timeout_s ({self.policy.pause_timeout_s:g}s) "
                f"with distill.on_teacher_lost: wait; bring its replicas back (its node, its resources) and rerun "
                f"the same command to resume, or set on_teacher_lost: drop") from exc
        return True

    def _lose(self, name: str, batch: Batch, exc: BaseException) -> None:
        reason = (f"teacher {name!r} gave no soft targets for batch {batch.batch_id!r} after "
                  f"{self.policy.retries} retries (deadline {self.timeout_s}s): {type(exc).__name__}: {exc}")
        if self.policy.on_teacher_lost == "fail":
            raise TeacherUnavailableError(reason + "; distill.on_teacher_lost is 'fail'") from exc
        logger.warning("%s; dropping it from the teacher set", reason)
        self.faults["teachers_lost"] += 1
        self.refresh(self._control.teacher_lost(name, reason))

    def _wait_for_teachers(self, batch: Batch) -> None:
        """Return once the set has a teacher; fail, or pause until one is added (`on_no_teacher`)."""
        if self._handles:
            return
        what = (f"no teacher is left for batch {batch.batch_id!r} (teacher set v{self.teacher_set.version}); "
                f"a KD student does not train without soft targets")
        if self.policy.on_no_teacher == "fail":
            raise NoTeacherError(f"{what}. Add a teacher (`distillery teacher add`) and rerun the same command to "
                                 f"resume, or set distill.on_no_teacher: pause")
        logger.warning("%s: paused for up to %.0fs until a teacher is added", what, self.policy.pause_timeout_s)
        start = time.monotonic()
        while not self._handles:
            if time.monotonic() - start > self.policy.pause_timeout_s:
                raise NoTeacherError(f"{what}; none was added within distill.pause_timeout_s "
                                     f"({self.policy.pause_timeout_s:g}s)")
            time.sleep(1.0)
            self.refresh(self._control.teacher_set())
        self.faults["paused_s"] += time.monotonic() - start

    def _poll(self) -> None:
        """Notice answers that arrived while the student trained, so their round trip is exact
        to a step rather than stretched to when the batch is read."""
        for request in set(self._in_flight.values()):
            request.poll()

    def _note_latency(self, name: str, latency_s: float) -> None:
        self._latencies.setdefault(name, deque(maxlen=LATENCY_WINDOW)).append(latency_s * 1000)

    @property
    def latency_ms(self) -> dict[str, float]:
        """Median round trip of each teacher's last `LATENCY_WINDOW` answered requests."""
        return {name: float(np.median(ms)) for name, ms in self._latencies.items() if name in self._handles and ms}

    def in_flight(self) -> dict[str, int]:
        """Requests sent to each teacher and not yet read."""
        return {name: len({id(r) for (_, t), r in self._in_flight.items() if t == name}) for name in self._handles}

    def metrics(self) -> dict[str, Any]:
        """Each teacher's wait, round trip and requests in flight, and the fault counters."""
        return {**super().metrics(), **{f"teacher/{n}/latency_ms": ms for n, ms in self.latency_ms.items()},
                **{f"teacher/{n}/in_flight": count for n, count in self.in_flight().items()},
                **{f"faults/{k}": v for k, v in self.faults.items()}}

    def close(self) -> None:
        for request in set(self._in_flight.values()):
            request.cancel()
        self._in_flight.clear()
        for handle in self._handles.values():
            if isinstance(handle, GrpcTeacher):
                handle.close()
