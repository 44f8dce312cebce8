"""The driver side of a run: the orchestrator actor, its Ray adapter for workers, the run
config, the regimes, results, the CLI (`distillery`, `python -m orchestration`).

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "PhaseAudit": "audit",
    "RunConfig": "config",
    "app": "cli",
    "audit_records": "audit",
    "audit_summary": "audit",
    "load_run_config": "config",
}

__all__ = ["PhaseAudit", "RunConfig", "app", "audit_records", "audit_summary", "load_run_config"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
