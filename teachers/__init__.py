"""Teacher backends, the Serve deployment, the soft-target schema and its codecs, and the
soft-target sources a train worker reads (served, offline store, in-worker).

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "EndpointSpec": "grpc_client",
    "FaultPolicy": "client",
    "FeatureHooks": "backend",
    "GrpcTeacher": "grpc_client",
    "IncompatibleTeacherError": "errors",
    "LoadedTeacher": "loaded",
    "LocalTeachers": "local",
    "Manifest": "store",
    "ResolvedModel": "backend",
    "RunIngress": "ingress",
    "SCHEMA_VERSION": "soft_targets",
    "ServeConfig": "config",
    "ServerSecurity": "grpc_service",
    "SoftTargetSource": "target_source",
    "SoftTargets": "soft_targets",
    "SoftTargetStoreError": "errors",
    "StoreKey": "store",
    "StoredTargets": "store",
    "StoredTeachers": "store",
    "TeacherAppArgs": "loaded",
    "TeacherClient": "client",
    "TeacherConfig": "config",
    "TeacherEntry": "teacher_set",
    "TeacherServicer": "grpc_service",
    "TeacherSet": "teacher_set",
    "TeacherSetSource": "target_source",
    "TeacherTargets": "targets",
    "TeacherTrainingConfig": "config",
    "app_name": "teacher_set",
    "build_teacher_app": "deployment",
    "check_teachers": "config",
    "check_tokenizer": "tokenizer_check",
    "dataset_fingerprint": "store",
    "dummy_inputs": "backend",
    "find_store": "store",
    "fixed_size_list": "arrow_codec",
    "is_complete": "store",
    "live_step": "teacher_set",
    "load_teacher": "backend",
    "model_input": "backend",
    "parse_endpoint_url": "grpc_client",
    "peer_teacher_name": "teacher_set",
    "declared_version": "backend",
    "resolve_model": "backend",
    "running_replicas": "deployment",
    "snapshot_teacher_name": "teacher_set",
    "start_grpc_server": "grpc_service",
    "start_teacher_server": "grpc_service",
    "to_table": "arrow_codec",
    "token_digest": "grpc_service",
    "write_manifest": "store",
}

__all__ = ["EndpointSpec", "FaultPolicy", "FeatureHooks", "GrpcTeacher", "IncompatibleTeacherError",
           "LoadedTeacher", "LocalTeachers", "Manifest", "ResolvedModel", "RunIngress", "SCHEMA_VERSION",
           "ServeConfig", "ServerSecurity", "SoftTargetSource", "SoftTargetStoreError", "SoftTargets", "StoreKey",
           "StoredTargets", "StoredTeachers", "TeacherAppArgs", "TeacherClient", "TeacherConfig", "TeacherEntry",
           "TeacherServicer", "TeacherSet", "TeacherSetSource", "TeacherTargets", "TeacherTrainingConfig",
           "app_name", "build_teacher_app", "check_teachers", "check_tokenizer", "dataset_fingerprint",
           "dummy_inputs", "find_store", "fixed_size_list", "is_complete", "live_step", "load_teacher",
           "model_input", "parse_endpoint_url", "peer_teacher_name", "resolve_model", "running_replicas", "declared_version",
           "snapshot_teacher_name", "start_grpc_server", "start_teacher_server", "to_table", "token_digest",
           "write_manifest"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
