"""Trained students kept in the run folder for later phases: born-again teachers, the next
task of a continual run (`<run_dir>/snapshots/<phase>.safetensors`), and the memory targets
of continual replay with stored targets (`<run_dir>/replay/<phase>`, an offline store)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from teachers import TeacherConfig


class SnapshotFolder:
    def __init__(self, run_dir: str | Path):
        self.snapshots = Path(run_dir) / "snapshots"
        self.replay = Path(run_dir) / "replay"

    def save(self, phase: str, weights: dict[str, Any]) -> Path:
        """Keep the trained student of `phase` (atomically: a resumed run never serves a half-written one)."""
        from safetensors.torch import save_file

        self.snapshots.mkdir(parents=True, exist_ok=True)
        path = self.snapshots / f"{phase}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(weights, str(tmp))
        tmp.replace(path)
        return path

    def path(self, phase: str) -> Path:
        path = self.snapshots / f"{phase}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no snapshot of phase {phase!r} at {path}: the phase that exports it must "
                                    f"finish first in this run folder (born-again teacher_snapshot, or the "
                                    f"previous task of a continual run)")
        return path

    def weights(self, phase: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.path(phase)))

    def memory(self, phase: str) -> Path:
        """The folder of `phase`'s stored memory targets (it must exist)."""
        folder = self.replay / phase
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"no stored memory targets of phase {phase!r} at {folder}: that task must "
                                    f"finish first in this run folder (continual.replay_targets: stored)")
        return folder

    def store_memory(self, phase: str, rows: np.ndarray, x: np.ndarray, config: Any, dataset: Any) -> bool:
        """Label the memory samples `x` (training rows `rows`) with the snapshot of `phase` into
        its replay store, with the whole distribution of every sample; False when it was already
        there."""
        import pyarrow.parquet as pq

        from orchestration.precompute import store_key
        from orchestration.teacher_training import teacher_app_args
        from teachers import Batch, LoadedTeacher, file_version, to_table, write_manifest

        folder = self.replay / phase
        if (folder / "manifest.json").is_file():
            return False
        snapshot = self.path(phase)
        cfg = TeacherConfig(name=f"memory-{phase}"[:48], model=config.student.model, weights=str(snapshot))
        args = teacher_app_args(cfg, str(snapshot), dataset, config.distill, config.run.allowed_factory_modules)
        record = LoadedTeacher.load(args).records([Batch.of_inputs("", x)], top_k=dataset.num_classes, dense_max_classes=1)[0]
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        pq.write_table(to_table(record, sample=rows), partial / "part-00000.parquet")
        key = replace(store_key(config, dataset, cfg.name, file_version(snapshot)), top_k=dataset.num_classes,
                      kind="topk")
        write_manifest(partial, key, None)
        partial.replace(folder)
        return True
