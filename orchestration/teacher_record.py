"""The run's teacher set, kept in `<run>/teachers.json` so that a restarted driver has it again.

The orchestrator rewrites the file (atomically) after every change: teachers from configs
(the run's own and those added with `teacher add`), external gRPC endpoints and standing
Serve applications, each with its weight, and the teacher-set version. Teachers the run's
phases manage themselves (born-again and continual snapshots, co-training peers) are not in
it: their phases deploy them again. An endpoint's credentials are never copied into the file:
it keeps the paths of the files they were read from (`--token-file`, `--ca-file`,
`--cert-file`, `--key-file`), read again on restore.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

TEACHERS_FILE = "teachers.json"
CREDENTIAL_FILES = ("token_file", "ca_file", "cert_file", "key_file")


def config_origin(config: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "config", "config": config}


def endpoint_origin(url: str, application: Optional[str], server_name: Optional[str],
                    files: Optional[dict[str, Optional[str]]]) -> dict[str, Any]:
    """An endpoint, its credentials by the files they come from (None: given inline, not kept)."""
    return {"kind": "endpoint", "url": url, "application": application, "server_name": server_name,
            "files": None if files is None else {k: files.get(k) for k in CREDENTIAL_FILES}}


def serve_app_origin(app: str) -> dict[str, Any]:
    return {"kind": "serve_app", "app": app}


def save_teachers(run_dir: Path, version: int, teachers: list[dict[str, Any]]) -> None:
    """Write the teacher set (`teachers`: name, weight and origin of each) and its version."""
    path = Path(run_dir) / TEACHERS_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": version, "teachers": teachers}, indent=2))
    tmp.replace(path)


def load_teachers(run_dir: Path) -> Optional[dict[str, Any]]:
    """The teacher set an earlier driver of this run kept; None for a new run."""
    path = Path(run_dir) / TEACHERS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_credentials(files: dict[str, Optional[str]]) -> dict[str, Optional[bytes]]:
    """The credentials an endpoint was added with, read again from their files; an `OSError`
    names a file that is gone."""
    out = {}
    for key, path in files.items():
        out[key] = Path(path).read_bytes() if path else None
    return out
