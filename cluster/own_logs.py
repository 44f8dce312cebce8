"""The project's own log lines, recognisable in any process: `WARNING students.checkpoint: ...`.

Every process the project runs code in (the driver, train workers, teacher replicas, the
orchestrator) calls `log_own_warnings()`: the project's loggers then write warnings and errors
to stderr in one format. Ray streams a worker's stderr to the driver, and a driver with a
quiet console (`orchestration.quiet_output`) picks these lines out of Ray's, Serve's, Train's
and DeepSpeed's output to show them on the screen.
"""

from __future__ import annotations

import logging
import re

OWN_LOGGERS = ("cluster", "teachers", "students", "orchestration", "planning")
FORMAT = "%(levelname)s %(name)s: %(message)s"
OWN_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL) (%s)(\.\w+)*: " % "|".join(OWN_LOGGERS))


def log_own_warnings() -> None:
    """Give the project's loggers their stderr handler (once per process)."""
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        if any(getattr(handler, "own_warnings", False) for handler in logger.handlers):
            continue
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.own_warnings = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False  # written once, not again by the root logger's handler
