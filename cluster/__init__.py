"""Ray connection, configuration basics, names, paths, errors and metric sinks: what every layer shares.

The names below are what other packages use; the rest is private to the package. Each name is
imported from its module on first use, so importing the package stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "ConfigError": "errors",
    "DEFAULT_ALLOWED_MODULES": "factory",
    "DistilleryError": "errors",
    "MetricsSink": "metrics",
    "MlflowSink": "metrics",
    "ModelSpec": "config",
    "NAMESPACE": "connection",
    "Registry": "registry",
    "ResourcesConfig": "config",
    "RunNotFoundError": "errors",
    "Strict": "config",
    "build_module": "factory",
    "check_name": "config",
    "connect": "connection",
    "default_cache_dir": "paths",
    "kd_phase": "naming",
    "load_with_overrides": "config",
    "load_yaml_model": "config",
    "method_kind": "naming",
    "online_phase": "naming",
    "orchestrator_name": "connection",
    "parse_yaml": "config",
    "paths_outside_roots": "paths",
    "phase_kind": "naming",
    "prepare_ray_env": "ray_env",
    "read_metrics": "metrics",
    "read_yaml_file": "config",
    "validate_model": "config",
}

__all__ = ["ConfigError", "DEFAULT_ALLOWED_MODULES", "DistilleryError", "MetricsSink", "MlflowSink",
           "ModelSpec", "NAMESPACE", "Registry", "ResourcesConfig", "RunNotFoundError", "Strict",
           "build_module", "check_name", "connect", "default_cache_dir", "kd_phase", "load_with_overrides",
           "load_yaml_model", "method_kind", "online_phase", "orchestrator_name", "parse_yaml",
           "paths_outside_roots", "phase_kind", "prepare_ray_env", "read_metrics", "read_yaml_file",
           "validate_model"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
