"""The console shows the project's own view of a run; everything else goes to `<run>/logs/run.log`.

Ray's, Serve's, Train's and DeepSpeed's output reaches a driver in many ways: Python loggers,
the workers' output that Ray streams to the driver, C++ log lines written straight to file
descriptor 2, warnings printed by libraries, child processes. Rather than chase each one,
`quiet_output` points the driver's file descriptors 1 and 2 at the log file for the length of
the block and gives the project's console the terminal (or log) it had. The project's own
warnings and errors, from the driver or from any worker (`cluster.own_logs`), are picked out
of the log as it grows and shown on the console; a traceback reaches the screen too, since
the descriptors are restored before an error leaves the block. `--verbose` skips all of this.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.text import Text

from cluster import OWN_LINE

LOG_FILE = Path("logs") / "run.log"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the prefixes of the lines it streams


@contextmanager
def quiet_output(run_dir: Path, console: Console, before_restore: Callable[[], None] = lambda: None) -> Iterator[Path]:
    """Send the process's stdout and stderr to `<run_dir>/logs/run.log` while the block runs;
    `console` keeps the screen and shows the project's own warnings and errors from the log.
    `before_restore`: called, when the block ends without an error, before the screen is given
    back (disconnecting from Ray there keeps its last streamed lines in the log)."""
    log = run_dir / LOG_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    screen = io.TextIOWrapper(os.fdopen(os.dup(saved[1]), "wb", buffering=0), write_through=True,
                              encoding=sys.stdout.encoding or "utf-8", errors="replace")
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = os.lseek(target, 0, os.SEEK_END)
    previous_file = console.file
    stop = threading.Event()
    echo = threading.Thread(target=_echo_own_lines, args=(log, start, console, stop), name="own-warnings", daemon=True)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        console.file = screen
        echo.start()
        yield log
        before_restore()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        stop.set()
        if echo.is_alive():
            echo.join()
        console.file = previous_file
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(target)
        screen.close()


def _echo_own_lines(log: Path, offset: int, console: Console, stop: threading.Event, every_s: float = 0.25) -> None:
    """Show the project's warning and error lines as they are appended to `log` (one last look
    after `stop`)."""
    with open(log, "rb") as stream:
        stream.seek(offset)
        pending = b""
        while True:
            stopping = stop.wait(every_s)
            pending += stream.read()
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = ANSI.sub("", raw.decode(errors="replace"))
                if OWN_LINE.search(line):
                    console.print(Text(line.strip()), soft_wrap=True)
            if stopping:
                return
