"""The run's orchestrator: a named actor that owns the teacher set and collects progress.

It deploys each teacher as its own Serve application `teacher-<name>`, validates it against
the student's output space, and bumps the teacher-set version on every change. Only control
messages pass through it; soft targets go from Serve replicas straight to train workers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ray import serve

from cluster import (AUDIT_FOLDER, MetricsSink, MlflowSink, log_own_warnings, open_audit_log, read_metrics,
                     validate_model)
from ingest import Dataset
from orchestration.admission import TeacherAdmission
from orchestration.config import run_folder
from orchestration.outside_teachers import OutsideTeachers
from orchestration.peer_teachers import PeerTeachers
from orchestration.regimes.co_training.board import PeerBoard
from orchestration.snapshot_teachers import SnapshotTeachers
from orchestration.snapshots import SnapshotFolder
from orchestration.teacher_record import config_origin, load_teachers, save_teachers
from orchestration.teacher_training import TrainedTeacher, teacher_app_args, trained_weights
from students import teacher_feature_layers
from teachers import (IncompatibleTeacherError, RunIngress, TeacherAppArgs, TeacherConfig, TeacherEntry, TeacherSet,
                      app_name, build_teacher_app, resolve_model, running_replicas)

logger = logging.getLogger(__name__)


class Orchestrator(SnapshotTeachers, PeerTeachers, OutsideTeachers):
    """Args:
        run: the run name.
        run_config: the validated run config, as a dict (`RunConfig.model_dump()`).
        run_dir: the run's output folder (metrics are written there).
        cache_dir: where trained teachers are cached.
        ingress_token_sha256: digest of the gRPC ingress token, when the ingress is on
            (`serve.grpc_port`: the orchestrator runs it, `teachers.ingress`).
    """

    def __init__(self, run: str, run_config: dict[str, Any], run_dir: str, cache_dir: str,
                 ingress_token_sha256: Optional[str] = None, dataset: Optional[Dataset] = None):
        from ingest import load_dataset
        from orchestration.config import RunConfig

        log_own_warnings()
        self.run = run
        self.config = RunConfig.model_validate(run_config)
        self.cache_dir = cache_dir
        self.ingress_token_sha256 = ingress_token_sha256
        dataset = dataset if dataset is not None else load_dataset(self.config.data)
        self.dataset = dataset.teacher_view()  # teachers read their own modality
        self.output_space = self.dataset.output_space
        self._admission = TeacherAdmission(run, self.dataset, self.config.data.tokenizer, self._event)
        self._audit_dir = run_folder(self.config).child(AUDIT_FOLDER)
        self._set_audit = open_audit_log(self._audit_dir, "teacher-set", flush_s=0.0)  # rare: uploaded at once
        self._teacher_set = TeacherSet()
        self._apps: dict[str, TeacherAppArgs] = {}
        self._run_dir = Path(run_dir)
        self._origins: dict[str, dict[str, Any]] = {}  # how each kept teacher came (orchestration.teacher_record)
        self._lock = threading.Lock()
        mlflow = (MlflowSink(self.config.run.mlflow_tracking_uri, self.config.run.mlflow_experiment, run)
                  if self.config.run.mlflow_tracking_uri else None)
        self._sink = MetricsSink(run_dir, mlflow)
        self._snapshots = SnapshotFolder(run_dir, run_folder(self.config).child("replay"))
        self._latest: dict[int, dict[str, Any]] = {}
        self._finished: dict[str, int] = {}  # phase -> the step it finished at, in the order they finished
        self._events: list[dict[str, Any]] = []
        self._phase: Optional[str] = None
        self.peers: Optional[PeerBoard] = None
        self._stop_requested = False
        self._last_step = _last_logged_steps(run_dir)  # (trainer, phase) -> step
        ingress_on = self.config.serve.grpc_port is not None and ingress_token_sha256 is not None
        self._ingress = self._start_ingress() if ingress_on else None  # never without its token

    def _start_ingress(self) -> RunIngress:
        """The run's gRPC ingress in this process: on the driver's node, where its files are."""
        serve_cfg = self.config.serve
        files = {"cert": serve_cfg.grpc_tls_cert_file, "key": serve_cfg.grpc_tls_key_file,
                 "client_ca": serve_cfg.grpc_tls_client_ca_file}
        tls = {what: Path(path).read_bytes() if path else None for what, path in files.items()}
        return RunIngress(self.run, self._served_apps, host=serve_cfg.grpc_host, port=serve_cfg.grpc_port,
                          token_sha256=self.ingress_token_sha256, tls=tls,
                          timeout_s=self.config.distill.request_timeout_s)

    def _served_apps(self) -> dict[str, TeacherAppArgs]:
        """The run's Serve teachers now in the set, by name (what the ingress reaches)."""
        return {name: self._apps[name] for name in self._teacher_set.teachers if name in self._apps}

    def ingress_address(self) -> Optional[str]:
        return self._ingress.address if self._ingress is not None else None

    @property
    def _teacher_set(self) -> TeacherSet:
        return self._current_set

    @_teacher_set.setter
    def _teacher_set(self, teacher_set: TeacherSet) -> None:
        """Every set the run makes goes into the audit: `distillery audit` checks each application
        against the set its worker had."""
        self._current_set = teacher_set
        self._set_audit.write({"kind": "teacher_set", "version": teacher_set.version,
                               "teachers": {name: entry.model_version for name, entry in teacher_set.teachers.items()},
                               "live": sorted(name for name, entry in teacher_set.teachers.items() if entry.live)})

    # --- queried by train workers (cheap) ----------------------------------------------------
    def teacher_set_version(self) -> int:
        return self._teacher_set.version

    def teacher_set(self) -> TeacherSet:
        return self._teacher_set

    def teacher_apps(self) -> list[TeacherAppArgs]:
        """How each current teacher is built (paths and kwargs, no tensors)."""
        return [self._apps[name] for name in self._teacher_set.teachers if name in self._apps]

    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> dict[str, Any]:
        """`distillery stop`: every phase in training ends at its next check, is evaluated and
        reported; phases not started yet are left for a rerun of the same command."""
        self._stop_requested = True
        self._event("stop_requested", phase=self._phase)
        return {"run": self.run, "phase": self._phase}

    def record_progress(self, record: dict[str, Any]) -> None:
        """A train worker's metric record: kept as that rank's latest (per trainer) and written to the sinks."""
        trainer = record.get("trainer")
        key = f"{trainer}/rank{record.get('rank', 0)}" if trainer else f"rank{record.get('rank', 0)}"
        earlier = self._latest.get(key, {})
        # a record carries what its window saw (an evaluation record has no loss): keep the last
        # known value of every metric of the phase, so a status shows them all
        self._latest[key] = {**earlier, **record} if earlier.get("phase") == record.get("phase") else record
        if record.get("rank", 0) == 0:
            self._phase = record.get("phase", self._phase)
            if record.get("phase_done"):
                self._finished[record["phase"]] = record["step"]
            if "step" in record:
                key = (trainer, record.get("phase"))
                self._last_step[key] = max(self._last_step.get(key, 0), record["step"])
        self._sink.write(record)

    def resumed(self, phase: str, step: int, trainer: Optional[str] = None) -> int:
        """A phase resumed from its checkpoint at `step`: record it and return how many steps
        trained before the failure are trained again (a lower bound: steps are seen every
        `student.log_every`)."""
        replayed = max(0, self._last_step.get((trainer, phase), step) - step)
        self._event("resumed", phase=phase, step=step, steps_replayed=replayed, **({"trainer": trainer} if trainer else {}))
        self._last_step[(trainer, phase)] = step
        return replayed

    # --- teacher management ------------------------------------------------------------------
    def add_teachers(self, teachers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Train (or load cached) weights for teachers in parallel, then deploy and validate each.

        Returns one summary per teacher. An incompatible teacher is refused with
        `IncompatibleTeacherError` (its app deleted); teachers deployed before it stay.
        """
        configs = [validate_model(TeacherConfig, t, f"<teacher {t.get('name', '?')}>") for t in teachers]
        for cfg in configs:
            if cfg.name in self._teacher_set.teachers:
                raise ValueError(f"teacher {cfg.name!r} is already in run {self.run!r}; remove it first "
                                 f"or choose another name")
        self._admission.check_model_tokenizers(configs)
        self._admission.check_declared_classes(configs)
        start = time.perf_counter()
        trained = trained_weights(configs, self._resolved, self.config.data, self.dataset, self.cache_dir)
        weights_s = time.perf_counter() - start
        out = [self._deploy(cfg, trained[cfg.name]) for cfg in configs]
        for info in out:  # what each stage took, for `teacher add` to print
            info["stages"] = {"weights": weights_s, **info["stages"]}
        return out

    def add_teacher(self, teacher: dict[str, Any]) -> dict[str, Any]:
        return self.add_teachers([teacher])[0]

    def restore_teachers(self, config_teachers: list[dict[str, Any]]) -> dict[str, Any]:
        """The teacher set this run had when its last driver stopped (`teachers.json`): teachers
        added, removed and reweighted at runtime, endpoints and Serve apps, and its version; for
        a new run, the config's teachers. Returns the summaries of the teachers deployed from
        configs (`deployed`), what was restored (`restored`) and what could not be (`skipped`)."""
        kept = load_teachers(self._run_dir)
        if kept is None:
            return {"deployed": self.add_teachers(config_teachers) if config_teachers else [], "restored": [],
                    "skipped": []}
        configs = [{**t["config"], "weight": t["weight"]} for t in kept["teachers"] if t["kind"] == "config"]
        deployed = self.add_teachers(configs) if configs else []
        skipped = []
        for teacher in kept["teachers"]:
            try:
                if teacher["kind"] == "serve_app":
                    self.add_serve_app(teacher["app"], teacher["weight"])
                elif teacher["kind"] == "endpoint":
                    self._restore_endpoint(teacher)
            except Exception as exc:  # noqa: BLE001 - the others are restored; the user is told which failed
                skipped.append(f"{teacher['name']} ({exc})")
                logger.warning("run %s: teacher %r was not restored: %s", self.run, teacher["name"], exc)
        with self._lock:
            if self._teacher_set.version < kept["version"]:  # the version the run had, not a count of the restores
                self._teacher_set = replace(self._teacher_set, version=kept["version"])
                self._persist()
            self._event("teachers_restored", teachers=sorted(self._teacher_set.teachers), skipped=skipped)
        return {"deployed": deployed, "restored": sorted(self._teacher_set.teachers), "skipped": skipped}

    def use_stored_teachers(self, entries: list[TeacherEntry]) -> int:
        """Offline mode: the teacher set is the teachers whose stores the students read."""
        with self._lock:
            for entry in entries:
                if entry.output_space != self.output_space:
                    raise IncompatibleTeacherError(
                        f"the offline store of teacher {entry.name!r} holds {entry.output_space} targets but the "
                        f"student of run {self.run!r} predicts {self.output_space} (another tokenizer or class "
                        f"count); precompute with the run's data and a matching teacher")
                self._teacher_set = self._teacher_set.with_teacher(entry)
                self._event("teacher_added", teacher=entry.name, model_version=entry.model_version,
                            weight=entry.weight, store=True)
        return self._teacher_set.version

    def set_weight(self, name: str, weight: float) -> dict[str, Any]:
        """Change a teacher's static weight; workers merge with it from their next step boundary.
        0 mutes the teacher (it keeps answering) while another teacher has weight > 0."""
        with self._lock:
            if name not in self._teacher_set.teachers:
                raise KeyError(f"run {self.run!r} has no teacher {name!r}; "
                               f"teachers: {sorted(self._teacher_set.teachers)}")
            others = sum(e.weight for n, e in self._teacher_set.teachers.items() if n != name)
            if weight < 0 or weight + others <= 0:
                raise ValueError(f"teacher {name!r}: weight must be >= 0 and leave some teacher of run {self.run!r} "
                                 f"above 0 (the others sum to {others:g}); got {weight:g}")
            previous = self._teacher_set.teachers[name].weight
            self._teacher_set = self._teacher_set.with_weight(name, weight)
            self._persist()
            self._event("teacher_weight", teacher=name, weight=weight, previous=previous)
        return {"name": name, "weight": weight, "previous": previous,
                "teacher_set_version": self._teacher_set.version}

    def teacher_lost(self, name: str, reason: str) -> TeacherSet:
        """A worker gave up on `name` after its retries (`distill.on_teacher_lost: drop`): drop it
        from the teacher set (the other weights renormalise) and return the new set. Another
        worker's report of the same loss finds it gone and changes nothing."""
        try:  # workers report at once from their own threads: the first removes it, the others find it gone
            self.remove_teacher(name, event="teacher_lost", reason=reason)
            logger.warning("run %s: teacher %r lost: %s; dropped from the teacher set", self.run, name, reason)
        except KeyError:
            pass
        return self._teacher_set

    def remove_teacher(self, name: str, event: str = "teacher_removed", **details: Any) -> dict[str, Any]:
        """Drop `name` from the teacher set and start deleting its Serve app."""
        with self._lock:
            if name not in self._teacher_set.teachers:
                raise KeyError(f"run {self.run!r} has no teacher {name!r}; "
                               f"teachers: {sorted(self._teacher_set.teachers)}")
            self._teacher_set = self._teacher_set.without_teacher(name)
            self._origins.pop(name, None)
            self._persist()
            self._event(event, teacher=name, teachers_left=sorted(self._teacher_set.teachers), **details)
            deployed = self._apps.pop(name, None) is not None
        # Workers drop the teacher at their next step boundary; requests still in flight to the
        # deleted app fail and are skipped by the TeacherClient. An external endpoint keeps running.
        if deployed:
            serve.delete(app_name(name), _blocking=False)
        return {"removed": name, "teacher_set_version": self._teacher_set.version}

    def remove_all_teachers(self, timeout_s: float = 45.0) -> None:
        """Remove every teacher; returns once their Serve apps are deleted (or after `timeout_s`),
        so a finished run leaves no app behind."""
        apps = {app_name(name) for name in self._apps}
        for name in list(self._teacher_set.teachers):
            self.remove_teacher(name)
        deadline = time.monotonic() + timeout_s
        while apps & set(serve.status().applications) and time.monotonic() < deadline:
            time.sleep(0.5)

    def status(self) -> dict[str, Any]:
        ts = self._teacher_set
        replicas = self._replicas({n: e.app_name for n, e in ts.teachers.items() if e.endpoint is None})
        return {
            "run": self.run,
            "phase": self._phase,
            "teacher_set_version": ts.version,
            "teachers": {n: {"weight": e.weight, "output_space": e.output_space, "model_version": e.model_version,
                             "parameters": e.parameters, "replicas": replicas.get(n),
                             "endpoint": e.endpoint.url if e.endpoint else f"serve:{e.app_name}"}
                         for n, e in ts.teachers.items()},
            "progress": dict(sorted(self._latest.items())),
            "finished": dict(self._finished),
            "peers": self.peers.status() if self.peers else {},
            "events": self._events[-20:],
        }

    def close(self) -> None:
        if self._ingress is not None:
            self._ingress.stop()
        self.remove_all_teachers()
        self._sink.close()

    # --- internals ---------------------------------------------------------------------------
    @staticmethod
    def _replicas(apps: dict[str, str]) -> dict[str, int]:
        """Running Serve replicas per served teacher; none when Serve cannot say (status goes on)."""
        try:
            return running_replicas(apps) if apps else {}
        except Exception as exc:  # noqa: BLE001 - a status view must not fail on Serve's controller
            logger.warning("Serve's status gave no replica counts: %s", exc)
            return {}

    def _persist(self) -> None:
        """Keep the teacher set for a restarted driver (called with the lock held)."""
        kept = [{"name": name, "weight": entry.weight, **self._origins[name]}
                for name, entry in self._teacher_set.teachers.items() if name in self._origins]
        save_teachers(self._run_dir, self._teacher_set.version, kept)

    def _event(self, kind: str, **fields: Any) -> None:
        event = {"event": kind, "time": time.time(), "teacher_set/version": self._teacher_set.version, **fields}
        self._events.append(event)
        self._sink.write(event)

    def _resolved(self, cfg: TeacherConfig):
        return resolve_model(cfg.model, in_features=self.dataset.in_features, num_classes=self.dataset.num_classes,
                             allowed_modules=self.config.run.allowed_factory_modules)

    def _deploy(self, cfg: TeacherConfig, trained: TrainedTeacher, kept: bool = True) -> dict[str, Any]:
        """Deploy and admit one teacher; `kept`: part of the set a restarted driver restores
        (a snapshot teacher is not: its phase deploys it again)."""
        args = teacher_app_args(cfg, trained.weights_path, self.dataset, self.config.distill,
                                self.config.run.allowed_factory_modules,
                                features=teacher_feature_layers(self.config.distill, cfg.name),
                                audit_dir=self._audit_dir)
        app = app_name(cfg.name)
        start = time.perf_counter()
        serve.run(build_teacher_app(args), name=app, route_prefix=None)  # no HTTP route: reached by handle only
        deployed = time.perf_counter()
        info = serve.get_app_handle(app).describe.remote().result(timeout_s=120)
        self._admission.check_tokenizer(cfg.name, info["tokenizer_hash"], info["num_classes"], on_refusal=lambda: serve.delete(app))
        if info["output_space"] != self.output_space:
            serve.delete(app)
            self._admission.refuse_output_space(cfg.name, info["output_space"])
        entry = TeacherEntry(cfg.name, cfg.weight, info["output_space"], info["num_classes"],
                             info["model_version"], info["parameters"], feature_shapes=info["feature_shapes"])
        with self._lock:
            self._apps[cfg.name] = args
            self._teacher_set = self._teacher_set.with_teacher(entry)
            if kept:
                self._origins[cfg.name] = config_origin(cfg.model_dump())
                self._persist()
            self._event("teacher_added", teacher=cfg.name, model_version=entry.model_version, weight=cfg.weight)
        stages = {"deploy": deployed - start, "check": time.perf_counter() - deployed}
        return {"name": cfg.name, "weight": cfg.weight, "teacher_set_version": self._teacher_set.version, **info,
                "stages": stages,
                "cached": trained.cached, "train_seconds": trained.train_seconds, "pretrained": cfg.pretrained,
                "test_score": trained.test_score}


def _last_logged_steps(run_dir: str) -> dict[tuple[Optional[str], str], int]:
    """The highest step rank 0 logged per (trainer, phase) in an earlier driver's metrics."""
    last: dict[tuple[Optional[str], str], int] = {}
    for record in read_metrics(run_dir):
        if record.get("rank") == 0 and "step" in record and "phase" in record:
            key = (record.get("trainer"), record["phase"])
            last[key] = max(last.get(key, 0), record["step"])
    return last
