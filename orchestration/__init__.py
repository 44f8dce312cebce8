"""The driver side of a run: the orchestrator actor, its Ray adapter for workers, the run
config, the regimes, results, the CLI (`distillery`, `python -m orchestration`).

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "RunConfig": "config",
    "app": "cli",
    "load_run_config": "config",
}

__all__ = ["RunConfig", "app", "load_run_config"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
