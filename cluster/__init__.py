"""Ray connection, configuration basics, names, paths, errors and metric sinks: what every layer shares.

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster.lazy import lazy_exports

_EXPORTS = {
    "ConfigError": "errors",
    "DEFAULT_ALLOWED_MODULES": "factory",
    "DTYPES": "devices",
    "DistilleryError": "errors",
    "MetricsSink": "metrics",
    "MlflowSink": "metrics",
    "ModelSpec": "config",
    "NAMESPACE": "connection",
    "Registry": "registry",
    "ResourcesConfig": "config",
    "RunFolder": "storage",
    "RunNotFoundError": "errors",
    "Strict": "config",
    "build_module": "factory",
    "check_custom_resources": "placement",
    "check_name": "config",
    "connect": "connection",
    "default_cache_dir": "paths",
    "download_folder": "storage",
    "exists": "storage",
    "fetch_file": "storage",
    "is_uri": "paths",
    "join": "storage",
    "join_uri": "storage",
    "kd_phase": "naming",
    "lazy_exports": "lazy",
    "load_with_overrides": "config",
    "load_yaml_model": "config",
    "local_folder_for": "storage",
    "method_kind": "naming",
    "on_this_node": "placement",
    "online_phase": "naming",
    "open_uri": "storage",
    "orchestrator_name": "connection",
    "parse_yaml": "config",
    "paths_outside_roots": "paths",
    "phase_kind": "naming",
    "prepare_ray_env": "ray_env",
    "process_group_backend": "devices",
    "put_file": "storage",
    "ray_options": "placement",
    "read_metrics": "metrics",
    "read_text": "storage",
    "read_yaml_file": "config",
    "teacher_cache_dir": "paths",
    "validate_model": "config",
    "work_device": "devices",
    "work_dtype": "devices",
}

__all__ = ["ConfigError", "DEFAULT_ALLOWED_MODULES", "DTYPES", "DistilleryError", "MetricsSink",
           "MlflowSink", "ModelSpec", "NAMESPACE", "Registry", "ResourcesConfig", "RunFolder",
           "RunNotFoundError", "Strict", "build_module", "check_custom_resources", "check_name", "connect",
           "default_cache_dir", "download_folder", "exists", "fetch_file", "is_uri", "join", "join_uri",
           "kd_phase", "lazy_exports", "load_with_overrides", "load_yaml_model", "local_folder_for",
           "method_kind", "on_this_node", "online_phase", "open_uri", "orchestrator_name", "parse_yaml",
           "paths_outside_roots", "phase_kind", "prepare_ray_env", "process_group_backend", "put_file",
           "ray_options", "read_metrics", "read_text", "read_yaml_file", "teacher_cache_dir",
           "validate_model", "work_device", "work_dtype"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
