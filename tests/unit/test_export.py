"""`distillery export` of a run with several phases: by default every finished distilled
student (not the baseline), from the export each phase wrote when it ended; `--phase` picks
one, a wrong name lists what there is; each is scored with the run's metric."""

import json

import pytest
import torch
from safetensors.torch import save_model

from ingest import load_dataset
from orchestration.config import load_run_config
from orchestration.export import export_run
from orchestration.teacher_training import accuracy
from students import CheckpointError
from teachers import resolve_model
from tests.conftest import CONFIGS


@pytest.fixture
def run_dir(tmp_path):
    """A finished KD phase and baseline, each with its end-of-phase export, and a phase in
    training whose only checkpoint was cut short."""
    cfg = load_run_config(CONFIGS / "tiny.yaml")
    run_dir = tmp_path / cfg.run.name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(cfg.model_dump_json())
    dataset = load_dataset(cfg.data)
    phases = {}
    for seed, phase in enumerate(["kd-seed0", "baseline-seed0"]):
        torch.manual_seed(seed)
        model = resolve_model(cfg.student.model, in_features=dataset.in_features,
                              num_classes=dataset.num_classes).build()
        (run_dir / "students" / phase).mkdir(parents=True)
        save_model(model, str(run_dir / "students" / phase / "model.safetensors"))
        phases[phase] = {"test_accuracy": accuracy(model, dataset.test.x, dataset.test.y)}
    (run_dir / "state.json").write_text(json.dumps({"phases": phases}))
    cut = run_dir / "train" / f"{cfg.run.name}-students" / "checkpoint_000005"
    cut.mkdir(parents=True)
    (cut / "progress.json").write_text(json.dumps({"phase": "kd-dkd-seed0", "completed": {}}))
    return run_dir, phases


def test_export_defaults_to_the_distilled_students_and_scores_them_with_the_runs_metric(run_dir):
    run_dir, phases = run_dir
    stages = []
    (row,) = export_run(run_dir, on_stage=lambda phase, stage: stages.append(phase))
    assert row["phase"] == "kd-seed0" and set(stages) == {"kd-seed0"}  # not the baseline
    assert row["metric"] == "test_accuracy" and row["reproduced"] == row["recorded"] == phases["kd-seed0"]["test_accuracy"]
    assert row["source"] == str(run_dir / "students" / "kd-seed0") and row["step"] is None
    assert (run_dir / "export" / "kd-seed0" / "model.safetensors").is_file()

    (baseline,) = export_run(run_dir, to=run_dir / "mine", phase="baseline-seed0")
    assert baseline["reproduced"] == phases["baseline-seed0"]["test_accuracy"]
    assert (run_dir / "mine" / "baseline-seed0" / "model.safetensors").is_file()


def test_a_wrong_phase_lists_the_phases_that_can_be_exported(run_dir):
    run_dir, _ = run_dir
    with pytest.raises(CheckpointError) as wrong:
        export_run(run_dir, phase="kd-seed1")
    assert str(wrong.value) == (
        "phase 'kd-seed1' has nothing to export. Phases that can be exported: kd-seed0 (finished; its end-of-phase "
        "export); baseline-seed0 (finished; its end-of-phase export); kd-dkd-seed0 (in training; 1 checkpoint(s))")
    with pytest.raises(CheckpointError, match="phase kd-dkd-seed0: no complete checkpoint \\(checkpoint_000005: no "):
        export_run(run_dir, phase="kd-dkd-seed0")
