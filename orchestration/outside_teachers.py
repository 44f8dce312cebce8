"""Teachers a run uses but does not deploy: a standing Serve application (`serve deploy`) and an
external TeacherService endpoint (gRPC), each checked like a deployed teacher before it joins
the teacher set."""

from __future__ import annotations

from typing import Any, Optional

from ray import serve

from cluster import check_name
from orchestration.teacher_record import endpoint_origin, read_credentials, serve_app_origin
from teachers import SCHEMA_VERSION, EndpointSpec, GrpcTeacher, IncompatibleTeacherError, TeacherEntry


class OutsideTeachers:
    """Methods of the `Orchestrator` actor (a mixin: it reads the actor's admission checks, lock,
    origins and teacher set)."""

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
