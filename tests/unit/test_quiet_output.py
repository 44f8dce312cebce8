"""A quiet console: whatever else writes to the driver's stdout and stderr (Python loggers,
C-level writes to the descriptors, child processes, warnings) lands in `<run>/logs/run.log`;
the console and the project's own warnings, from this process or streamed from a worker,
stay on the screen; a traceback still reaches it."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from rich.console import Console
    from cluster import log_own_warnings
    from orchestration.quiet_output import quiet_output

    log_own_warnings()
    console = Console()
    with quiet_output(Path(sys.argv[1]), console) as log:
        console.print("students: kd-seed0 step 10")
        print("(RayTrainWorker pid=1) Reporting training result 1: TrainingReport(...)")
        logging.getLogger("ray.serve").warning("Serve controller INFO line")
        os.write(2, b"[core_worker.cc:123] an error line of Ray's C++ core\\n")
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('a child process line\\\\n')"])
        warnings.warn("a deprecation inside a library", DeprecationWarning, stacklevel=1)
        logging.getLogger("students.checkpoint").warning("resuming from the older checkpoint x")
        print("(RayTrainWorker pid=2) \\x1b[33mWARNING teachers.client: teacher mlp lost\\x1b[0m", file=sys.stderr)
        console.print("results table")
    print("after the block: on the screen again")
    if len(sys.argv) > 2:
        with quiet_output(Path(sys.argv[1]), console):
            raise RuntimeError("a failure inside the run")
''')


def test_only_the_projects_own_lines_reach_the_screen_and_the_rest_is_in_the_runs_log(tmp_path):
    screen = subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert screen.returncode == 0, screen.stderr
    shown = screen.stdout + screen.stderr
    log = (tmp_path / "logs" / "run.log").read_text()
    for foreign in ("Reporting training result", "Serve controller INFO line", "core_worker.cc", "a child process line",
                    "a deprecation inside a library"):
        assert foreign not in shown and foreign in log, foreign
    lines = shown.splitlines()
    assert lines[0] == "students: kd-seed0 step 10" and "results table" in lines and lines[-1].startswith("after the")
    assert "WARNING students.checkpoint: resuming from the older checkpoint x" in lines
    assert "(RayTrainWorker pid=2) WARNING teachers.client: teacher mlp lost" in lines  # Ray's colours dropped


def test_a_traceback_reaches_the_screen(tmp_path):
    failed = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "fail"], capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode == 1 and "RuntimeError: a failure inside the run" in failed.stderr
