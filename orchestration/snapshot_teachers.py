"""The orchestrator's born-again and continual snapshots (`orchestration.snapshots`): a trained
student kept, served as a teacher, its task's memory labelled, and dropped again."""

from __future__ import annotations

from typing import Any

import numpy as np

from cluster import put_file
from orchestration.config import run_folder
from orchestration.teacher_training import TrainedTeacher
from teachers import TeacherConfig, snapshot_teacher_name


class SnapshotTeachers:
    """Methods of the `Orchestrator` actor (a mixin: it reads the actor's config, dataset,
    snapshot folder and teacher set)."""

    def save_snapshot(self, phase: str, weights: dict[str, Any]) -> str:
        """Keep the trained student of `phase` as `<run_dir>/snapshots/<phase>.safetensors`; with
        the run folder on object storage, uploaded there at once (its replicas read it from there)."""
        path = self._snapshots.save(phase, weights)
        self._event("snapshot_saved", phase=phase, path=str(path))
        served = self._served_snapshot(phase)
        if served != str(path):
            put_file(path, served)
        return str(path)

    def _served_snapshot(self, phase: str) -> str:
        """Where the replicas of a snapshot teacher read its weights: the URI of the run folder's
        copy on object storage, else the file on this (the driver's) node."""
        folder = run_folder(self.config)
        return folder.child("snapshots", f"{phase}.safetensors") if folder.remote else str(self._snapshots.path(phase))

    def snapshot_weights(self, phase: str) -> dict[str, Any]:
        """The exported student of `phase` (the initial weights of the next task of a continual run)."""
        return self._snapshots.weights(phase)

    def store_memory_targets(self, phase: str, column: str, value: int, samples: int) -> str:
        """Continual replay with stored targets: the snapshot of `phase` labels the memory of its
        task (the first `samples` training samples whose `column` is `value`, as the students
        pick them) into `<run folder>/replay/<phase>`, an offline store; kept when already there."""
        from ingest import student_subset

        train = student_subset(self.dataset.train, self.config.data.student_train_samples)
        rows = np.flatnonzero(train.columns[column] == value)[:samples]
        stored = self._snapshots.store_memory(phase, rows, train.x[rows], self.config, self.dataset,
                                              self._served_snapshot(phase))
        folder = self._snapshots.memory(phase)
        if stored:
            self._event("memory_stored", phase=phase, samples=len(rows), path=folder)
        return folder

    def memory_store(self, phase: str) -> str:
        return self._snapshots.memory(phase)

    def serve_snapshot(self, phase: str) -> dict[str, Any]:
        """Deploy the frozen student of `phase` as a teacher (already served after a resume: kept)."""
        name = snapshot_teacher_name(phase)
        if name in self._teacher_set.teachers:
            return {"name": name, "teacher_set_version": self._teacher_set.version}
        path = self._served_snapshot(phase)
        cfg = TeacherConfig(name=name, model=self.config.student.model, weights=path,
                            resources=self.config.student.serve_resources)
        return self._deploy(cfg, TrainedTeacher(path, float("nan"), 0, 0.0, True), kept=False)

    def drop_snapshot(self, phase: str) -> None:
        name = snapshot_teacher_name(phase)
        if name in self._teacher_set.teachers:
            self.remove_teacher(name)
