"""Build torch modules from `module:function` factory paths, behind an allow-list.

A config names a model as `{factory: "models.zoo:mlp", kwargs: {...}}`. The module must
sit under one of the allowed prefixes, so a request that arrives over the network (such as
`distillery teacher add`) can never make a process import arbitrary code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

from cluster.errors import FactoryError

DEFAULT_ALLOWED_MODULES = ("models.zoo", "models.hf", "models.hf_lm")
# the builders' modules before the `models` package held them: a config naming one is told where it went
MOVED_MODULES = {"teachers.zoo": "models.zoo", "teachers.hf": "models.hf", "teachers.hf_lm": "models.hf_lm"}


def _is_allowed(module: str, allowed: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def resolve_factory(path: str, allowed: Iterable[str] = DEFAULT_ALLOWED_MODULES) -> Callable[..., Any]:
    """Return the callable named by `path` ("package.module:function").

    Raises:
        FactoryError: the path is malformed, outside the allow-list, or does not exist.
    """
    allowed = tuple(allowed)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise FactoryError(f"factory {path!r} must look like 'package.module:function'")
    if module_name in MOVED_MODULES:
        raise FactoryError(f"factory {path!r}: the model builders moved to the models package; write "
                           f"'{MOVED_MODULES[module_name]}:{attr}'")
    if not _is_allowed(module_name, allowed):
        raise FactoryError(
            f"factory {path!r} is outside the allowed modules {list(allowed)}; "
            "add its module to run.allowed_factory_modules in the run config"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FactoryError(f"factory {path!r}: cannot import {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise FactoryError(f"factory {path!r}: {module_name!r} has no callable {attr!r}")
    return fn


def build_module(path: str, kwargs: dict[str, Any], allowed: Iterable[str] = DEFAULT_ALLOWED_MODULES):
    """Call the factory at `path` with `kwargs` and return the module it builds."""
    fn = resolve_factory(path, allowed)
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise FactoryError(f"factory {path!r} rejected kwargs {sorted(kwargs)}: {exc}") from exc
