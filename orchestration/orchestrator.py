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

import numpy as np
from ray import serve

from cluster import (AUDIT_FOLDER, MetricsSink, MlflowSink, check_name, log_own_warnings, open_audit_log, put_file,
                     read_metrics, validate_model)
from teachers import (EndpointSpec, GrpcTeacher, IncompatibleTeacherError, RunIngress, TeacherAppArgs, TeacherConfig,
                      TeacherEntry, TeacherSet, app_name, build_teacher_app, peer_teacher_name, resolve_model,
                      running_replicas, SCHEMA_VERSION, snapshot_teacher_name)
from orchestration.admission import TeacherAdmission
from orchestration.config import run_folder
from orchestration.regimes.co_training.board import Key, PeerBoard
from orchestration.snapshots import SnapshotFolder
from orchestration.teacher_record import (config_origin, endpoint_origin, load_teachers, read_credentials,
                                          save_teachers, serve_app_origin)
from ingest import Dataset
from orchestration.teacher_training import TrainedTeacher, teacher_app_args, trained_weights
from students import teacher_feature_layers

logger = logging.getLogger(__name__)


class Orchestrator:
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

    def _restore_endpoint(self, teacher: dict[str, Any]) -> None:
        if teacher["files"] is None:
            raise ValueError(f"its credentials were given inline, not from files; add it again with "
                             f"`distillery teacher add --run {self.run} --endpoint {teacher['url']} ...`")
        credentials = read_credentials(teacher["files"])
        token = credentials["token_file"]
        spec = EndpointSpec(teacher["url"], token=token.decode().strip() if token else None,
                            ca_pem=credentials["ca_file"], cert_pem=credentials["cert_file"],
                            key_pem=credentials["key_file"], application=teacher["application"],
                            server_name=teacher["server_name"])
        self.add_endpoint(teacher["name"], spec, teacher["weight"], teacher["files"])

    def add_serve_app(self, app: str, weight: float = 1.0) -> dict[str, Any]:
        """Use a Serve application that runs on its own (a standing pool from `serve deploy`):
        checked like a deployed teacher, never deleted by this run."""
        if weight <= 0:
            raise ValueError(f"teacher weight must be > 0, got {weight}")
        if not app.startswith("teacher-"):
            raise ValueError(f"Serve application {app!r}: teacher applications are named teacher-<name> "
                             f"(`distillery serve-config` writes them so)")
        name = app.removeprefix("teacher-")
        check_name(name)
        if name in self._teacher_set.teachers:
            raise ValueError(f"teacher {name!r} is already in run {self.run!r}")
        if app not in serve.status().applications:
            raise ValueError(f"no Serve application {app!r} runs on this cluster; deploy the pool first "
                             f"(serve deploy <config>), running: {sorted(serve.status().applications)}")
        info = serve.get_app_handle(app).describe.remote().result(timeout_s=120)
        self._admission.check_tokenizer(name, info["tokenizer_hash"], info["num_classes"], on_refusal=lambda: None)
        if info["output_space"] != self.output_space:
            self._admission.refuse_output_space(name, info["output_space"])
        entry = TeacherEntry(name, weight, info["output_space"], info["num_classes"], info["model_version"],
                             info["parameters"], feature_shapes=info["feature_shapes"])
        with self._lock:
            self._teacher_set = self._teacher_set.with_teacher(entry)
            self._origins[name] = serve_app_origin(app)
            self._persist()
            self._event("teacher_added", teacher=name, model_version=entry.model_version, weight=weight,
                        serve_app=app)
        return {"name": name, "teacher_set_version": self._teacher_set.version, **info}

    def add_endpoint(self, name: Optional[str], spec: EndpointSpec, weight: float = 1.0,
                     files: Optional[dict[str, Optional[str]]] = None) -> dict[str, Any]:
        """Register an external TeacherService endpoint (`distillery teacher serve`, or another
        cluster's Serve gRPC ingress) after checking it answers and fits the student. `files`:
        the paths its credentials were read from (kept, so a restarted driver reads them again)."""
        if weight <= 0:
            raise ValueError(f"teacher weight must be > 0, got {weight}")
        remote = GrpcTeacher(spec, name=name or spec.url, timeout_s=30, retries=2)
        try:
            info = remote.describe()
        finally:
            remote.close()
        name = name or info["name"]
        check_name(name)
        if name in self._teacher_set.teachers:
            raise ValueError(f"teacher {name!r} is already in run {self.run!r}; pass --name to register "
                             f"this endpoint under another name")
        if info["schema_version"] != SCHEMA_VERSION:
            raise IncompatibleTeacherError(
                f"endpoint {spec.url} speaks soft-target schema v{info['schema_version']}, this run reads "
                f"v{SCHEMA_VERSION}; run the same Distillery version on both sides")
        self._admission.check_tokenizer(name, info["tokenizer_hash"], info["num_classes"], on_refusal=lambda: None)
        if info["output_space"] != self.output_space or info["in_features"] != self.dataset.in_features:
            self._event("teacher_refused", teacher=name, output_space=info["output_space"])
            raise IncompatibleTeacherError(
                f"endpoint {spec.url} (teacher {name!r}) was refused: it maps {info['in_features']} input "
                f"features to {info['output_space']}, the student of run {self.run!r} maps "
                f"{self.dataset.in_features} to {self.output_space}. The run goes on without it.")
        entry = TeacherEntry(name, weight, info["output_space"], info["num_classes"], info["model_version"],
                             info["parameters"], endpoint=spec)
        with self._lock:
            self._teacher_set = self._teacher_set.with_teacher(entry)
            self._origins[name] = endpoint_origin(spec.url, spec.application, spec.server_name, files)
            self._persist()
            self._event("teacher_added", teacher=name, model_version=entry.model_version, weight=weight,
                        endpoint=spec.url)
        return {**info, "name": name, "teacher_set_version": self._teacher_set.version, "endpoint": spec.url}

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

    # --- born-again and continual snapshots (orchestration.snapshots) ----------------------------
    def save_snapshot(self, phase: str, weights: dict[str, Any]) -> str:
        """Keep the trained student of `phase` as `<run_dir>/snapshots/<phase>.safetensors`; with
        the run folder on object storage, uploaded there at once (its replicas read it from there)."""
        path = self._snapshots.save(phase, weights)
        self._event("snapshot_saved", phase=phase, path=str(path))
        served = self._served_snapshot(phase)
        if served != str(path):
            put_file(path, served)
        return str(path)

    def _served_snapshot(self, phase: str) -> str:
        """Where the replicas of a snapshot teacher read its weights: the URI of the run folder's
        copy on object storage, else the file on this (the driver's) node."""
        folder = run_folder(self.config)
        return folder.child("snapshots", f"{phase}.safetensors") if folder.remote else str(self._snapshots.path(phase))

    def snapshot_weights(self, phase: str) -> dict[str, Any]:
        """The exported student of `phase` (the initial weights of the next task of a continual run)."""
        return self._snapshots.weights(phase)

    def store_memory_targets(self, phase: str, column: str, value: int, samples: int) -> str:
        """Continual replay with stored targets: the snapshot of `phase` labels the memory of its
        task (the first `samples` training samples whose `column` is `value`, as the students
        pick them) into `<run folder>/replay/<phase>`, an offline store; kept when already there."""
        from ingest import student_subset

        train = student_subset(self.dataset.train, self.config.data.student_train_samples)
        rows = np.flatnonzero(train.columns[column] == value)[:samples]
        stored = self._snapshots.store_memory(phase, rows, train.x[rows], self.config, self.dataset,
                                              self._served_snapshot(phase))
        folder = self._snapshots.memory(phase)
        if stored:
            self._event("memory_stored", phase=phase, samples=len(rows), path=folder)
        return folder

    def memory_store(self, phase: str) -> str:
        return self._snapshots.memory(phase)

    def serve_snapshot(self, phase: str) -> dict[str, Any]:
        """Deploy the frozen student of `phase` as a teacher (already served after a resume: kept)."""
        name = snapshot_teacher_name(phase)
        if name in self._teacher_set.teachers:
            return {"name": name, "teacher_set_version": self._teacher_set.version}
        path = self._served_snapshot(phase)
        cfg = TeacherConfig(name=name, model=self.config.student.model, weights=path,
                            resources=self.config.student.serve_resources)
        return self._deploy(cfg, TrainedTeacher(path, float("nan"), 0, 0.0, True), kept=False)

    def drop_snapshot(self, phase: str) -> None:
        name = snapshot_teacher_name(phase)
        if name in self._teacher_set.teachers:
            self.remove_teacher(name)

    # --- online co-training: peers that teach each other ----------------------------------------
    def start_peers(self, names: list[str], served: list[dict[str, Any]], replicas: int = 1) -> list[dict[str, Any]]:
        """Meet the peer trainers `names` on a peer board, and serve each peer of `served`
        (`{"name", "model"}`: those another learns from) as live teacher `peer-<name>`; its
        replicas load the weights its trainer publishes (they answer nothing before the first)."""
        if self.peers is None:
            self.peers = PeerBoard(names, replicas)
        out = []
        for peer in served:
            name = peer_teacher_name(peer["name"])
            if name in self._teacher_set.teachers:
                continue
            cfg = TeacherConfig(name=name, model=peer["model"],
                                resources=self.config.student.serve_resources.model_copy(update={"replicas": replicas}))
            args = teacher_app_args(cfg, None, self.dataset, self.config.distill, self.config.run.allowed_factory_modules,
                                    live_run=self.run, audit_dir=self._audit_dir)
            serve.run(build_teacher_app(args), name=app_name(name), route_prefix=None)
            info = serve.get_app_handle(app_name(name)).describe.remote().result(timeout_s=120)
            entry = TeacherEntry(name, 1.0, info["output_space"], info["num_classes"], f"live:{name}",
                                 info["parameters"], live=True)
            with self._lock:
                self._apps[name] = args
                self._teacher_set = self._teacher_set.with_teacher(entry)
                self._event("teacher_added", teacher=name, model_version=entry.model_version, weight=1.0, live=True)
            out.append({"name": name, **info})
        return out

    def publish_weights(self, peer: str, key: Key, weights: list[Any]) -> None:
        """A trainer's rank 0 publishes `[ray.put(state_dict)]`; only the reference passes here."""
        self.peers.publish(peer, key, weights)

    def wait_published(self, peer: str, newer_than: Optional[Key], timeout_s: float = 2.0):
        return self.peers.wait_published(peer, newer_than, timeout_s)

    def peer_loaded(self, peer: str, replica: str, key: Key) -> None:
        self.peers.loaded(peer, replica, key)

    def served_key(self, peer: str) -> Optional[Key]:
        return self.peers.served(peer)

    def wait_served(self, peer: str, key: Key, timeout_s: float) -> Key:
        return self.peers.wait_served(peer, key, timeout_s)

    def wait_round(self, peer: str, round_: int, teachers: list[str], timeout_s: float) -> None:
        self.peers.wait_round(peer, round_, teachers, timeout_s)

    def finish_round(self, peer: str, round_: int) -> None:
        self.peers.finish_round(peer, round_)
        self._event("peer_round_done", peer=peer, round=round_)

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
