"""Fault scenarios on a real local Ray cluster: each runs a real `distillery run`, breaks a real
process (SIGKILL, SIGSTOP, a deleted app) and returns the figures it measured. The tests of
`tests/reliability/` assert on them; `python -m benchmarks.reliability` records them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from harness.ray_nodes import REPO
from harness.runs import RunProcess

CONFIGS = REPO / "tests" / "reliability" / "configs"


def alive_actors(class_prefix: str) -> list[Any]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000, raise_on_missing_output=False)
    return sorted((a for a in actors if a.class_name.startswith(class_prefix)), key=lambda a: a.pid)


def train_workers(run: RunProcess) -> list[Any]:
    """The live train workers of `run` alone: those of the job its orchestrator (the actor named
    after the run) belongs to. The state API may still list an earlier test's workers as alive
    for a moment after they went."""
    actors = alive_actors("")
    job = next((a.job_id for a in actors if a.name == run.run_name and a.class_name.endswith("Orchestrator")), None)
    assert job is not None, f"run {run.run_name!r} has no live orchestrator"
    return [a for a in actors if a.class_name.startswith("RayTrainWorker") and a.job_id == job]


def replica_pids(app: str) -> list[int]:
    return [a.pid for a in alive_actors(f"ServeReplica:{app}:")]


def http_routes() -> dict[str, Any]:
    """Serve's proxy location and every application's HTTP route (None: no route)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    return {"proxy_location": details.get("proxy_location"),
            **{app: info.get("route_prefix") for app, info in details.get("applications", {}).items()}}


def rank0_steps(run: RunProcess, phase: Optional[str] = None) -> list[dict]:
    return [r for r in run.metrics() if r.get("rank") == 0 and "step" in r and "event" not in r
            and (phase is None or r.get("phase") == phase)]


def last_step(run: RunProcess) -> int:
    steps = rank0_steps(run)
    return steps[-1]["step"] if steps else 0


def events(run: RunProcess, kind: str) -> list[dict]:
    return [r for r in run.metrics() if r.get("event") == kind]


def phase_final(run: RunProcess, phase: str) -> dict:
    """The finished phase's final metrics (rank 0's record; the ledger is summed over ranks)."""
    done = [r for r in rank0_steps(run, phase) if r.get("phase_done")]
    assert done, f"phase {phase} did not finish:\n{run.log()[-3000:]}"
    return {k.removeprefix("final/"): v for k, v in done[-1].items() if k.startswith("final/")}


def exactly_once(audit: dict, phase: str, planned: int) -> dict:
    """Assert what `distillery audit` found for `phase`: every one of its `planned` batches
    applied once, none stale or unanswered; return the phase's audit."""
    found = audit["phases"][phase]
    problems = {k: found[k] for k in ("lost", "duplicated", "unplanned", "stale", "unanswered") if found[k]}
    assert not problems and audit["exactly_once"], f"audit of {phase}: {problems}"
    assert found["finished"] and found["planned"] == found["applied"] == planned, found
    return found


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder was saved at (its client state, read with weights_only)."""
    import torch

    from orchestration.export import model_states_file

    state = torch.load(model_states_file(folder), weights_only=True, map_location="cpu")
    return state["distillery"]["step"]


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def teacher_faults(output_dir: Path) -> dict[str, Any]:
    """One KD run (teachers mlp with 2 replicas, cnn with 1) through four faults in turn:
    1. a replica of mlp is killed (SIGKILL): its requests are retried on the other replica;
    2. cnn hangs (SIGSTOP): batches go on with mlp (fallback) until cnn misses its deadline
       more than `request_retries` times in a row and is dropped, the weights renormalised;
    3. mlp's Serve app is deleted: it is lost too, no teacher is left and the run pauses
       (`on_no_teacher: pause`) rather than training on nothing;
    4. a teacher is added with `distillery teacher add`: training continues; `distillery stop`
       ends the phase, which counts its batches lost and applied twice."""
    from ray import serve

    run = RunProcess(CONFIGS / "teacher_faults.yaml", "teacher-faults", output_dir)
    figures: dict[str, Any] = {}
    stopped_pid = None
    try:
        run.wait_for(lambda: last_step(run) >= 10, "step 10", timeout=300)
        figures["http_routes"] = http_routes()
        victim = replica_pids("teacher-mlp")[0]
        step = last_step(run)
        os.kill(victim, signal.SIGKILL)
        run.wait_for(lambda: last_step(run) >= step + 20, "20 steps after the replica kill")
        window = [r for r in rank0_steps(run) if step <= r["step"] <= step + 20]
        figures["replica_kill_retries"] = window[-1].get("faults/retries", 0) - window[0].get("faults/retries", 0)
        figures["replica_kill_max_wait_ms"] = round(max(r.get("teacher/mlp/wait_ms", 0.0) for r in window), 1)

        stopped_pid = replica_pids("teacher-cnn")[0]
        hung_at, step = time.time(), last_step(run)
        os.kill(stopped_pid, signal.SIGSTOP)
        lost = run.wait_for(lambda: [e for e in events(run, "teacher_lost") if e["teacher"] == "cnn"], "cnn lost")
        figures["hung_teacher_dropped_after_s"] = round(lost[0]["time"] - hung_at, 2)
        os.kill(stopped_pid, signal.SIGKILL)  # Serve deletes the app it was in; no need to wait for its shutdown
        stopped_pid = None
        run.wait_for(lambda: [r for r in rank0_steps(run) if r["time"] > lost[0]["time"] + 1
                              and r.get("teachers") == ["mlp"]], "steps with mlp alone")

        deleted_at = time.time()
        serve.delete("teacher-mlp", _blocking=False)
        run.wait_for(lambda: [e for e in events(run, "teacher_lost") if e["teacher"] == "mlp"], "mlp lost")
        time.sleep(3)  # paused: no step may be logged while no teacher is left
        paused_step = last_step(run)
        time.sleep(3)
        figures["steps_while_no_teacher"] = last_step(run) - paused_step
        added = cli("teacher", "add", "--run", "teacher-faults", str(REPO / "tests/integration/configs/teachers/quick_mlp.yaml"))
        assert added.returncode == 0, added.stdout + added.stderr
        run.wait_for(lambda: last_step(run) >= paused_step + 20, "20 steps with the added teacher")
        figures["no_teacher_pause_s"] = round(time.time() - deleted_at, 2)
        stop = cli("stop", "--run", "teacher-faults")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert run.finish(timeout=300) == 0, run.log()[-4000:]
    finally:
        if stopped_pid is not None:
            os.kill(stopped_pid, signal.SIGKILL)
        if run.proc.poll() is None:
            run.kill()
    final = phase_final(run, "kd-seed0")
    figures.update({k: final[k] for k in ("batches_planned", "batches_lost", "batches_applied_twice", "steps")})
    figures.update({k: v for k, v in final.items() if k.startswith("faults_")})
    figures["audit"] = run.audit()
    after_drop = [r for r in rank0_steps(run) if r.get("teachers") == ["mlp"] and "teacher/mlp/effective_weight" in r]
    figures["mlp_effective_weight_after_cnn_dropped"] = after_drop[-1]["teacher/mlp/effective_weight"] if after_drop else None
    figures["log"] = str(run.log_path)
    return figures


def losses(run: RunProcess, phase: str = "kd-seed0") -> dict[int, list[float]]:
    """Rank 0's loss at every logged step, in the order logged (a step trained again after a
    resume appears twice)."""
    out: dict[int, list[float]] = {}
    for r in rank0_steps(run, phase):
        if "loss/total" in r:
            out.setdefault(r["step"], []).append(r["loss/total"])
    return out


def worker_kill(output_dir: Path, kill_worker_after: int = 25, kill_driver_after: int = 45,
                reference: bool = False) -> dict[str, Any]:
    """Two failures of one run, then a damaged checkpoint:
    1. a train worker is killed (SIGKILL) after step `kill_worker_after`: Ray Train restarts the
       worker group from the last checkpoint (every 10 steps) and the run goes on;
    2. the driver is killed after step `kill_driver_after`, and the newest checkpoint is cut
       short (as a crash while it was copied would leave it);
    3. the same command resumes from the complete checkpoint before it and finishes.
    Every step trained twice must give the loss it gave the first time (fp32, CPU)."""
    run = RunProcess(CONFIGS / "worker_kill.yaml", "worker-kill", output_dir)
    try:
        run.wait_for(lambda: last_step(run) >= kill_worker_after, f"step {kill_worker_after}", timeout=300)
        killed_at, killed_step = time.time(), last_step(run)
        os.kill(train_workers(run)[-1].pid, signal.SIGKILL)
        run.wait_for(lambda: events(run, "resumed"), "the worker group restarted from its checkpoint", timeout=300)
        run.wait_for(lambda: last_step(run) >= kill_driver_after, f"step {kill_driver_after}", timeout=300)
    finally:
        run.kill()
    train_dir = run.run_dir / "train" / "worker-kill-students"
    snapshot = json.loads((train_dir / "checkpoint_manager_snapshot.json").read_text())
    latest = train_dir / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]  # what Ray would resume from
    latest_step = checkpoint_step(latest)
    damaged = max(latest.glob("student/*optim_states.pt"))
    damaged.write_bytes(damaged.read_bytes()[:100])

    rerun = RunProcess(CONFIGS / "worker_kill.yaml", "worker-kill", output_dir)
    assert rerun.finish(timeout=400) == 0, rerun.log()[-4000:]
    curve = losses(rerun)  # both drivers' records
    repeated = {s: v for s, v in curve.items() if len(v) > 1}
    resumes = events(rerun, "resumed")
    final = phase_final(rerun, "kd-seed0")
    resumed_event = next(e for e in events(run, "resumed") if e["time"] > killed_at)
    return {"worker_killed_after_step": killed_step,
            "worker_restart_resumed_from_step": resumes[0]["step"],
            "worker_restart_steps_replayed": resumes[0]["steps_replayed"],
            "worker_restart_recovery_s": round(next(r["time"] for r in rank0_steps(run) if r["time"] > resumed_event["time"])
                                               - killed_at, 2),
            "latest_checkpoint_step": latest_step, "latest_checkpoint_cut_short": str(damaged.relative_to(run.run_dir)),
            "driver_rerun_used_an_older_checkpoint": "resuming from the older checkpoint" in rerun.log(),
            "driver_rerun_resumed_from_step": final["resumed_from_step"],
            "driver_rerun_steps_replayed": final["steps_replayed"],
            "steps_compared": len(repeated),
            "max_loss_difference": max((abs(v - runs[0]) for runs in repeated.values() for v in runs[1:]),
                                       default=float("nan")),
            **{k: final[k] for k in ("batches_planned", "batches_lost", "batches_applied_twice", "steps")},
            **(_against_uninterrupted(output_dir, curve) if reference else {}),
            "audit": rerun.audit(), "log": str(rerun.log_path)}


def _against_uninterrupted(output_dir: Path, curve: dict[int, list[float]]) -> dict[str, Any]:
    """The same config and seed run again without faults: the interrupted run's loss at every
    step (as last trained) against it."""
    clean = RunProcess(CONFIGS / "worker_kill.yaml", "worker-kill-uninterrupted", output_dir)
    assert clean.finish(timeout=400) == 0, clean.log()[-4000:]
    reference = losses(clean)
    common = sorted(set(reference) & set(curve))
    return {"uninterrupted_steps_compared": len(common),
            "uninterrupted_max_loss_difference": max((abs(curve[s][-1] - reference[s][0]) for s in common),
                                                     default=float("nan"))}


def _load_student(orchestrator: Any, student: int, batches: int, batch_size: int, output_space: str,
                  in_features: int) -> dict[str, Any]:
    """One student's teacher client asking for `batches` batches, one batch to a request and
    8 requests in flight (Serve's queue limit applies per caller: more than 1 + 2 in flight
    from one student are rejected and retried)."""
    import numpy as np

    from ingest.batches import Batch
    from orchestration.ray_run_control import RayRunControl
    from students.config import DistillConfig
    from teachers.client import FaultPolicy, TeacherClient

    distill = DistillConfig(request_timeout_s=30)
    rng = np.random.default_rng(student)
    plan = [Batch.of_inputs(f"student{student}-b{i}", rng.random((batch_size, in_features), dtype=np.float32))
            for i in range(batches)]
    client = TeacherClient(RayRunControl(orchestrator), output_space=output_space, temperature=distill.temperature, prefetch=8,
                           batches_per_request=1, timeout_s=distill.request_timeout_s,
                           dense_max_classes=distill.dense_max_classes, policy=FaultPolicy.of(distill))
    client.plan(plan)
    waits, answered = [], set()
    start = time.perf_counter()
    for batch in plan:
        t = time.perf_counter()
        targets = client.targets_for(batch)
        waits.append((time.perf_counter() - t) * 1000)
        if targets.records["mlp"].batch_id == batch.batch_id:
            answered.add(batch.batch_id)
    client.close()
    return {"planned": batches, "answered": len(answered), "wall_s": time.perf_counter() - start, "waits_ms": waits,
            "backpressure_retries": client.faults["backpressure_retries"], "retries": client.faults["retries"]}


def load(output_dir: Path, students: tuple[int, ...] = (1, 2, 4, 8), batches: int = 100,
         batch_size: int = 16) -> list[dict[str, Any]]:
    """Students on one teacher whose replica takes 1 request at a time and queues at most 2
    more per caller (`max_queued_requests`): batches per second over all students, p50 and p99
    of a student's wait for one batch's soft targets, rejections retried, batches lost."""
    import numpy as np
    import ray

    from ingest.loading import load_dataset
    from orchestration.config import load_run_config
    from orchestration.services import start_orchestrator, start_serve

    cfg = load_run_config(CONFIGS / "load.yaml")
    dataset = load_dataset(cfg.data)
    start_serve(cfg)
    orchestrator = start_orchestrator(cfg, output_dir / "load")
    student_task = ray.remote(num_cpus=0.05)(_load_student)
    rows = []
    try:
        ray.get(orchestrator.add_teachers.remote([t.model_dump() for t in cfg.teachers]))
        for n in students:
            start = time.perf_counter()
            results = ray.get([student_task.remote(orchestrator, i, batches, batch_size, dataset.output_space,
                                                   dataset.in_features) for i in range(n)])
            wall = time.perf_counter() - start
            waits = np.concatenate([r["waits_ms"] for r in results])
            rows.append({"students": n, "batches": sum(r["planned"] for r in results),
                         "batches_per_s": round(sum(r["answered"] for r in results) / wall, 1),
                         "p50_ms": round(float(np.percentile(waits, 50)), 2),
                         "p99_ms": round(float(np.percentile(waits, 99)), 2),
                         "backpressure_retries": sum(r["backpressure_retries"] for r in results),
                         "other_retries": sum(r["retries"] for r in results),
                         "lost": sum(r["planned"] - r["answered"] for r in results)})
    finally:
        ray.get(orchestrator.close.remote())
        ray.kill(orchestrator)
    return rows


def teacher_node_loss(output_dir: Path, gcs: str) -> dict[str, Any]:
    """A KD run with its teacher on a second node (custom resource `teacher_node`) and its
    students on the head (`student_node`): the teacher node is stopped mid-run; the workers
    wait for the teacher (`on_teacher_lost: wait`) instead of training on nothing; a node with
    the same resource joins again, Serve restarts the replica there and the run goes on until
    `distillery stop`."""
    import ray

    from harness.ray_nodes import WorkerNode

    node = WorkerNode(gcs, {"teacher_node": 1}, output_dir / "teacher-node.log")
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    figures: dict[str, Any] = {}
    run = None
    try:
        first = node.start()
        output_dir.mkdir(parents=True, exist_ok=True)
        run = RunProcess(CONFIGS / "two_nodes.yaml", "two-nodes", output_dir)
        run.wait_for(lambda: last_step(run) >= 10, "step 10", timeout=300)
        figures["teacher_nodes_before"] = sorted({a.node_id == first for a in alive_actors("ServeReplica:teacher-mlp:")})
        workers = train_workers(run)
        figures["student_nodes"] = sorted({a.node_id == head for a in workers})
        figures["student_workers"] = len(workers)
        stopped_at = time.time()
        node.stop()
        figures["node_alive_after_stop"] = any(n["NodeID"] == first and n["Alive"] for n in ray.nodes())
        run.wait_for(lambda: run.log().count("waiting up to") >= 1, "a worker waiting for the teacher", timeout=120)
        away_step = last_step(run)
        time.sleep(5)
        figures["steps_while_teacher_away"] = last_step(run) - away_step
        second = node.start()
        back_at = time.time()
        run.wait_for(lambda: last_step(run) >= away_step + 10, "10 steps once the teacher node is back", timeout=240)
        figures["resumed_after_node_back_s"] = round(time.time() - back_at, 1)
        figures["away_s"] = round(back_at - stopped_at, 1)
        figures["teacher_nodes_after"] = sorted({a.node_id == second for a in alive_actors("ServeReplica:teacher-mlp:")})
        stop = cli("stop", "--run", "two-nodes")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert run.finish(timeout=300) == 0, run.log()[-4000:]
    finally:
        if run is not None and run.proc.poll() is None:
            run.kill()
        node.stop()
    final = phase_final(run, "kd-seed0")
    figures.update({k: final[k] for k in ("batches_planned", "batches_lost", "batches_applied_twice", "steps")})
    figures.update({k: v for k, v in final.items() if k.startswith("faults_")})
    figures["teacher_lost_events"] = len(events(run, "teacher_lost"))
    figures["audit"] = run.audit()
    figures["log"] = str(run.log_path)
    return figures
