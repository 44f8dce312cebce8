"""Append-only audit files: what each process did, in its own file under the run's `audit/`.

Teacher replicas write the batch ids they answered, train workers the batch ids they applied,
the orchestrator every teacher set it made. `distillery audit` reads them back and checks the
run from them alone (`orchestration.audit`), never from the train loop's own ledger.

In a local run folder each process appends lines to `audit/<name>.jsonl`, flushed line by
line, so a process killed a moment after a write leaves it on disk. In a run folder on object
storage (which cannot append), the lines are uploaded as numbered segments,
`audit/<name>/<seq>.jsonl`, every `flush_s` seconds and when the process closes its log; a
process killed in between loses up to `flush_s` of its lines.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

from cluster.paths import is_uri

AUDIT_FOLDER = "audit"
FLUSH_S = 5.0


def process_tag() -> str:
    """What tells this process's file from every other's: host, pid and start time."""
    return f"{socket.gethostname()}-{os.getpid()}-{time.time_ns() // 1_000_000}"


class AuditLog:
    """One process's append-only audit file `<folder>/<name>.jsonl` (or its segments on a URI)."""

    def __init__(self, folder: str, name: str, flush_s: float = FLUSH_S):
        self.folder, self.name, self.flush_s = folder, name, flush_s
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: list[str] = []
        self._uploaded_at = time.monotonic()
        self._segment = 0
        self._file = None
        if not is_uri(folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            self._file = open(Path(folder) / f"{name}.jsonl", "a", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; `t` (wall time) and `seq` (this file's count) are added."""
        with self._lock:
            self._seq += 1
            line = json.dumps({"t": time.time(), "seq": self._seq, **record}, separators=(",", ":")) + "\n"
            if self._file is not None:
                self._file.write(line)
                return
            self._pending.append(line)
            if time.monotonic() - self._uploaded_at >= self.flush_s:
                self._upload()

    def _upload(self) -> None:
        from cluster.storage import join, write_text

        if self._pending:
            self._segment += 1
            write_text(join(self.folder, self.name, f"{self._segment:06d}.jsonl"), "".join(self._pending))
            self._pending = []
        self._uploaded_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            elif self._pending:
                self._upload()


def open_audit_log(folder: Optional[str], name: str, flush_s: float = FLUSH_S) -> Optional[AuditLog]:
    """This process's audit log `name` in `folder`, or None when the run keeps none (`folder` is None)."""
    return None if folder is None else AuditLog(folder, f"{name}-{process_tag()}", flush_s)


def read_audit(folder: str) -> list[dict[str, Any]]:
    """Every record of every audit file under `folder` (a local path or a URI); a line cut short
    by a killed process is skipped."""
    from cluster.storage import join, list_files, read_text

    records = []
    for relative in list_files(folder, ".jsonl", depth=1):
        source = relative.split("/")[0].removesuffix(".jsonl")
        for line in read_text(join(folder, relative)).splitlines():
            try:
                records.append({**json.loads(line), "file": source})
            except json.JSONDecodeError:
                continue
    return records
