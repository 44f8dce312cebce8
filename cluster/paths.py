"""Where a config read from a file may point: paths inside the allowed roots only.

A config from elsewhere (a shared file, a `teacher add` request) must not make the job read
or write outside the places its user chose. The roots never come from the config itself:
the working directory, the teacher cache (`DISTILLERY_CACHE_DIR`), the folders listed in
`DISTILLERY_ALLOWED_ROOTS` (separated by `os.pathsep`) and paths given on the command line
(`--output-dir`, `--set`), which are the user's own. Object-storage URIs (`s3://...`) in a file
must start with a prefix listed in `DISTILLERY_ALLOWED_URIS` (separated by spaces).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional

# Dotted paths of the run-config fields that name files or folders; `[]` walks a list.
PATH_FIELDS = ("run.output_dir", "data.generated", "distill.store_dir", "serve.grpc_token_file",
               "serve.grpc_tls_cert_file", "serve.grpc_tls_key_file", "serve.grpc_tls_client_ca_file", "generate.output",
               "teachers[].weights", "data.source.train", "data.source.test", "data.source.transfer")


def is_uri(location: str) -> bool:
    """Whether `location` names a place on object storage (`s3://...`) rather than a local path."""
    return "://" in str(location)


def default_cache_dir() -> str:
    return os.environ.get("DISTILLERY_CACHE_DIR", str(Path.home() / ".cache" / "distillery"))


def teacher_cache_dir() -> str:
    """Where trained teachers' weights are cached: `DISTILLERY_TEACHER_CACHE` (a folder, or a URI
    such as s3://bucket/teachers that every node reads, for a cluster without a shared volume),
    else `<DISTILLERY_CACHE_DIR>/teachers`."""
    return os.environ.get("DISTILLERY_TEACHER_CACHE") or str(Path(default_cache_dir()) / "teachers")


def allowed_roots() -> list[Path]:
    extra = [p for p in os.environ.get("DISTILLERY_ALLOWED_ROOTS", "").split(os.pathsep) if p]
    return [Path(p).expanduser().resolve() for p in [os.getcwd(), default_cache_dir(), *extra]]


def allowed_uri_prefixes() -> list[str]:
    return os.environ.get("DISTILLERY_ALLOWED_URIS", "").split()


def _values(node: Any, parts: list[str], prefix: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield prefix, node
        return
    key, rest = parts[0], parts[1:]
    if key.endswith("[]"):
        items = node.get(key[:-2]) if isinstance(node, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            yield from _values(item, rest, f"{prefix}{key[:-2]}[{i}].")
    elif isinstance(node, dict) and key in node:
        yield from _values(node[key], rest, f"{prefix}{key}." if rest else f"{prefix}{key}")


def paths_outside_roots(data: Any, fields=PATH_FIELDS, skip: frozenset[str] = frozenset(),
                        roots: Optional[list[Path]] = None) -> list[str]:
    """One message per path field of `data` (a parsed YAML dict) that resolves outside the roots
    (`..` and symlinks resolved first); fields in `skip` (set on the command line) are not checked."""
    roots = roots if roots is not None else allowed_roots()
    problems = []
    for field in fields:
        for where, value in _values(data, field.split("."), ""):
            if any(where == g or where.startswith((g + ".", g + "[")) for g in skip) or not isinstance(value, str):
                continue
            if is_uri(value):
                if not any(value.startswith(prefix) for prefix in allowed_uri_prefixes()):
                    problems.append(f"{where}: {value!r} is a URI outside the allowed prefixes "
                                    f"{allowed_uri_prefixes()}; give it on the command line or add its prefix "
                                    f"to DISTILLERY_ALLOWED_URIS")
                continue
            resolved = Path(value).expanduser().resolve()
            if not any(resolved.is_relative_to(root) for root in roots):
                problems.append(f"{where}: {value!r} resolves to {resolved}, outside the allowed roots "
                                f"{[str(r) for r in roots]}; move it under one of them, give it on the command "
                                f"line, or add its folder to DISTILLERY_ALLOWED_ROOTS")
    return problems
