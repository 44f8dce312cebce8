"""The scaling-law planner (`distillery plan`, `fit-law`, `sweep`); it imports no orchestration
module: it is handed what it runs.

The names below are what other packages use; the rest is private to the package. Each name is
imported from its module on first use, so importing the package stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "fit_law_command": "commands",
    "plan_command": "commands",
    "sweep_command": "commands",
}

__all__ = ["fit_law_command", "plan_command", "sweep_command"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
