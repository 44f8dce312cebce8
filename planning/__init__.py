"""The scaling-law planner (`distillery plan`, `fit-law`, `sweep`); it imports no orchestration
module: it is handed what it runs.

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "fit_law_command": "commands",
    "plan_command": "commands",
    "sweep_command": "commands",
}

__all__ = ["fit_law_command", "plan_command", "sweep_command"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
