"""The run's trainers: one Ray Train `TorchTrainer` over the phases of a worker group, or one
per peer at once for online co-training."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cluster import AUDIT_FOLDER
from orchestration.config import RunConfig, run_folder
from students import StudentConfig


def student_scaling(student: StudentConfig) -> dict[str, Any]:
    """`ScalingConfig` arguments of the student workers: their CPUs, GPUs and node group."""
    resources = {"CPU": student.cpus_per_worker, **student.custom}
    if student.gpus_per_worker > 0:
        resources["GPU"] = student.gpus_per_worker
    return {"num_workers": student.num_workers, "use_gpu": student.gpus_per_worker > 0,
            "resources_per_worker": resources, "label_selector": student.labels or None}


def train_students(jobs: list, cfg: RunConfig, reference: Optional[np.ndarray] = None,
                   trainer_name: Optional[str] = None, streamed_test: Optional[dict[str, Any]] = None
                   ) -> dict[str, dict[str, Any]]:
    """One Ray Train run of `train_student` over `jobs`; resumes from its last checkpoint.
    `streamed_test`: a streamed source's test split for the workers (`workers_test_split`).

    Returns the final metrics of every phase, keyed by phase name.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig as TrainRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from cluster import process_group_backend
    from students import train_student

    source = cfg.data.source
    streamed = {}
    if source is not None and source.stream:
        from ingest import TRAIN_DATASET
        from orchestration.stream_data import stream_data_config, students_dataset

        streamed = {"datasets": {TRAIN_DATASET: students_dataset(cfg.data)}, "dataset_config": stream_data_config()}
    trainer = TorchTrainer(
        train_student,
        train_loop_config={"jobs": jobs, "reference": reference, "audit_dir": run_folder(cfg).child(AUDIT_FOLDER),
                           "streamed_test": streamed_test},
        scaling_config=ScalingConfig(**student_scaling(cfg.student)),
        torch_config=TorchConfig(backend=process_group_backend(cfg.student.gpus_per_worker)),
        run_config=TrainRunConfig(name=trainer_name or f"{cfg.run.name}-students", **run_folder(cfg).train_storage(),
                                  checkpoint_config=CheckpointConfig(num_to_keep=2),
                                  failure_config=FailureConfig(max_failures=cfg.student.max_failures)),
        **streamed,
    )
    return trainer.fit().metrics["phases"]


def workers_test_split(cfg: RunConfig, test: Any) -> Optional[dict[str, Any]]:
    """The driver's test split of a streamed source (`test`), sent with the trainer's config to
    every train worker, which would otherwise take a pass over the source's train files for
    the rows held out of them; None for data the workers read whole anyway."""
    if cfg.data.source is None or not cfg.data.source.stream:
        return None
    return {"data": cfg.data.model_dump_json(), "split": test}


def train_peers(jobs: dict[str, list], cfg: RunConfig,
                streamed_test: Optional[dict[str, Any]] = None) -> dict[str, dict[str, Any]]:
    """Online co-training: one Ray Train run per peer, all at once (each launched from its own
    Ray task); the first that fails stops the others."""
    import ray

    from cluster import ConfigError, on_this_node

    trainers = {peer: peer_jobs for peer, peer_jobs in jobs.items() if peer_jobs}
    needed = len(trainers) * cfg.student.num_workers * cfg.student.cpus_per_worker
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available:
        raise ConfigError("<cluster>", [
            f"online: {len(trainers)} peer trainers x student.num_workers {cfg.student.num_workers} x "
            f"student.cpus_per_worker {cfg.student.cpus_per_worker:g} = {needed:g} CPUs must run at once; the "
            f"cluster has {available:g}. Lower student.cpus_per_worker or num_workers, or add nodes"])
    fit = ray.remote(train_students).options(num_cpus=0, **on_this_node())  # beside the driver, as Train's controller
    pending = {fit.remote(peer_jobs, cfg, None, f"{cfg.run.name}-peer-{peer}", streamed_test): peer
               for peer, peer_jobs in trainers.items()}
    phases: dict[str, dict[str, Any]] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            phases.update(ray.get(done[0]))
    finally:
        for ref in pending:  # a trainer failed: its peers would wait for it until their timeout
            ray.cancel(ref, force=True)
    return phases
