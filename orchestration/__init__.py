"""The driver side of a run: the orchestrator actor, its Ray adapter for workers, the run
config, the regimes, results, the CLI (`distillery`, `python -m orchestration`).

The names below are what other packages use; the rest is private to the package. Each name is
imported from its module on first use, so importing the package stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "RunConfig": "config",
    "app": "cli",
    "load_run_config": "config",
}

__all__ = ["RunConfig", "app", "load_run_config"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
