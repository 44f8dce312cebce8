"""Strict JSON-schema validation for the deployment tests: KubeRay's CRD schemas and Ray
Serve's config schema, with every object that lists its properties closed to others (what
`kubectl apply --validate=strict` does for a CRD; Serve's pydantic models would silently
ignore an unknown field)."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import yaml

CRDS = Path(__file__).parents[1] / "deploy" / "kuberay" / "crds"


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with unknown fields refused wherever it lists properties (unless it keeps unknown
    fields on purpose: `x-kubernetes-preserve-unknown-fields`), and OpenAPI's `nullable` as JSON
    schema's null type."""
    schema = copy.deepcopy(schema)
    for node in _schemas(schema):
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
    return schema


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


@lru_cache(maxsize=None)
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The strict schema of KubeRay's `kind` (RayJob, RayService, RayCluster) at `version`."""
    for path in CRDS.glob("*.yaml"):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if crd["spec"]["names"]["kind"] == kind:
            served = {v["name"]: v for v in crd["spec"]["versions"]}
            return strict(served[version]["schema"]["openAPIV3Schema"])
    raise LookupError(f"no CRD of kind {kind} in {CRDS}")


def validate(document: Any, schema: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` (the first error, with its path) when `document` breaks `schema`."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        raise errors[0]
