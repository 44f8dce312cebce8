"""Configuration basics: YAML read with a safe loader into strict pydantic models.

Every model refuses unknown keys. Each component owns the section it reads (a `Config`
model beside the code it configures: `teachers.config`, `students.config`, the regimes of
`orchestration.regimes`); `orchestration.config.RunConfig` composes them into the run's one
YAML file. `validate_model` turns any problem into a `ConfigError` whose lines start with the
field path (`student.zero_stage`) and say what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.errors import ConfigError
from cluster.paths import paths_outside_roots
from cluster.placement import check_custom_resources

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
NAME_HINT = "lowercase letters, digits, '-' or '_', starting with a letter or digit, at most 48 chars"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a valid name: use {NAME_HINT}")
    return value


class ModelSpec(Strict):
    """A torch module built by a factory; `in_features`/`num_classes` default to the dataset's."""

    factory: str = Field(description="'package.module:function' under an allowed module")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class AutoscalingConfig(Strict):
    """Serve autoscaling of a teacher: the replica count follows the requests in flight."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="requests in flight per replica Serve aims at (students keep several in flight)")
    upscale_delay_s: float = Field(30.0, ge=0, description="how long demand must stay high before Serve adds replicas")
    downscale_delay_s: float = Field(600.0, ge=0, description="how long demand must stay low before Serve removes "
                                                               "replicas")

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"autoscaling: min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self


class ResourcesConfig(Strict):
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    replicas: int = Field(1, ge=1, description="a fixed replica count (without autoscaling)")
    autoscaling: Optional[AutoscalingConfig] = Field(
        None, description="{min_replicas, max_replicas, target_ongoing_requests}: Serve scales the teacher's replicas "
                          "with the students' requests in flight (replaces replicas)")
    custom: dict[str, float] = Field(
        default_factory=dict, description="Ray custom resources per replica: {teacher_node: 1} places the teacher "
                                          "(its replicas, its training) on nodes started with that resource")
    labels: dict[str, str] = Field(default_factory=dict, description="Ray node labels the teacher's nodes must carry")
    max_ongoing_requests: int = Field(16, ge=1, description="requests one replica works on at once")
    max_queued_requests: int = Field(
        -1, ge=-1, description="requests a caller may queue for the app before Serve rejects more "
                               "(back-pressure, retried by the students); -1: no limit")

    _custom = field_validator("custom")(check_custom_resources)


M = TypeVar("M", bound=BaseModel)


_SHOWN_INPUT = 200  # characters of a wrong value quoted in an error; a whole section is never quoted


def _format_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: the field's path and what is wrong with it. A check across fields
    names its own fields (`student.model.kwargs.tokenizer: ...`) and is shown as it says them."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"]
        if err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against the docs of this section)"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
            shown = repr(err["input"])
            message = f"{message} (got {shown if len(shown) <= _SHOWN_INPUT else shown[:_SHOWN_INPUT] + '...'})"
        names_its_field = path == "<root>" and re.match(r"[\w.\[\]]+: ", message) is not None
        problems.append(message if names_its_field else f"{path}: {message}")
    return problems


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML with the safe loader; `!!python` tags and friends are refused."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"<yaml>: not safe, well-formed YAML: {exc}"]) from exc


def validate_model(model_type: Type[M], data: Any, source: str) -> M:
    """Validate parsed data into `model_type`, raising `ConfigError` with field paths."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"<root>: expected a mapping, got {type(data).__name__}"])
    try:
        return model_type.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_validation_error(exc)) from None


def read_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file with the safe loader; a missing file is a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["<file>: not found; pass the path of a YAML config file"])
    return parse_yaml(path.read_text(), str(path))


def load_yaml_model(model_type: Type[M], path: str | Path) -> M:
    return validate_model(model_type, read_yaml_file(path), str(path))


def load_with_overrides(model_type: Type[M], path: str | Path, overrides: Optional[dict[str, Any]] = None) -> M:
    """Load and validate a config file. `overrides` maps dotted paths to values (CLI flags);
    paths in the file that lie outside the allowed roots are refused."""
    data = read_yaml_file(path)
    given = frozenset(k for k, v in (overrides or {}).items() if v is not None)
    outside = paths_outside_roots(data, skip=given)
    if outside:
        raise ConfigError(str(path), outside)
    for dotted, value in (overrides or {}).items():  # a None (`--set key=null`) clears the key to its null
        _override(data, dotted, value, str(path))
    return validate_model(model_type, data, str(path))


def _override(data: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Set `dotted` (keys, and list positions as numbers: `teachers.0.training.epochs`) to
    `value`; a path that does not lead into the config is refused, never skipped."""
    node: Any = data
    keys = dotted.split(".")
    for depth, key in enumerate(keys):
        if isinstance(node, list) and not (key.isdigit() and int(key) < len(node)):
            raise ConfigError(where, [f"--set {dotted}: {key!r} is not a position of a list of {len(node)} "
                                      f"entries (0 .. {len(node) - 1})"])
        if not isinstance(node, (dict, list)):
            raise ConfigError(where, [f"--set {dotted}: {key!r} lies under a value ({node!r}), not a section"])
        index = int(key) if isinstance(node, list) else key
        if depth == len(keys) - 1:
            node[index] = value
        else:
            node = node[index] if isinstance(node, list) else node.setdefault(key, {})
