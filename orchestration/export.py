"""`distillery export`: a run's students, gathered into safetensors and scored with the run's metric.

What a phase can be exported from, newest first:
- its newest checkpoint that passes its integrity check (and whose pickles are safe to load):
  the full fp32 weights are gathered from every rank's ZeRO partitions (stages 0 to 3, on CPU,
  no Ray); this is how a phase still in training is exported;
- the folder its train workers wrote when it finished (`<run>/students/<phase>`), which stays
  when later phases rotate the checkpoints away.

By default every finished distilled student is exported (one folder per method and seed:
`<run>/export/<phase>/`), not the baselines; `--phase` picks one, and a wrong name lists the
phases there are. Each export holds the student model's weights (the projectors and exits the
KD terms added are left out): `model.safetensors`, loadable into the config's `student.model`,
and for a Hugging Face language model its Hugging Face folder too (`hf/`: config, weights,
tokenizer). Each is scored on the run's test split with the run's own metric (accuracy;
perplexity; for a sentence encoder the mean cosine and rank agreement with the teachers'
embeddings the run saved) and compared with what the run recorded for that phase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from students import CheckpointError, PROGRESS_FILE, TAG, first_complete, integrity_problem, refuse_unsafe_pickles

REFERENCE_FILE = "reference_embeddings.npy"  # an encoder run's teachers' test embeddings
NOT_DISTILLED = ("baseline", "alone")  # phase kinds of the no-KD controls
STAGES = ("checking the checkpoint's integrity", "gathering the student's weights", "writing the export",
          "scoring the export on the test split")


@dataclass
class Exportable:
    """Where one phase's student can be exported from."""

    phase: str
    finished: bool
    checkpoints: list[Path]  # newest first
    folder: Optional[Path]  # written when the phase finished

    def describe(self) -> str:
        where = [f"{len(self.checkpoints)} checkpoint(s)"] if self.checkpoints else []
        where += ["its end-of-phase export"] if self.folder else []
        return f"{self.phase} ({'finished' if self.finished else 'in training'}; {', '.join(where)})"


def recorded_phases(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The finished phases and their final metrics, as the run recorded them (`state.json`)."""
    path = run_dir / "state.json"
    return json.loads(path.read_text())["phases"] if path.is_file() else {}


def exportable_phases(run_dir: Path, run_name: str, finished: dict[str, dict[str, Any]]) -> dict[str, Exportable]:
    """Every phase of the run there is something to export from, in training order; `finished`:
    the phases the run recorded as finished."""
    checkpoints: dict[str, list[Path]] = {}
    train_dir = run_dir / "train" / f"{run_name}-students"
    for folder in sorted((p for p in train_dir.glob("checkpoint_*") if p.is_dir()), reverse=True):
        try:
            phase = json.loads((folder / PROGRESS_FILE).read_text())["phase"]
        except (OSError, ValueError, KeyError):  # cut short: the integrity check says why, if it is ever chosen
            continue
        checkpoints.setdefault(phase, []).append(folder)
    phases = list(finished) + [p for p in checkpoints if p not in finished]
    out = {}
    for phase in phases:
        exported = run_dir / "students" / phase
        folder = exported if (exported / "model.safetensors").is_file() else None
        if folder or checkpoints.get(phase):
            out[phase] = Exportable(phase, phase in finished, checkpoints.get(phase, []), folder)
    return out


def chosen_phases(phases: dict[str, Exportable], wanted: Optional[str]) -> list[Exportable]:
    """`wanted`, or every finished distilled student; a `CheckpointError` that lists what there is."""
    listing = "; ".join(e.describe() for e in phases.values()) or "none: the run has not checkpointed a student yet"
    if wanted is not None:
        if wanted not in phases:
            raise CheckpointError(f"phase {wanted!r} has nothing to export. Phases that can be exported: {listing}")
        return [phases[wanted]]
    distilled = [e for e in phases.values() if e.finished and e.phase.split("-")[0] not in NOT_DISTILLED]
    if not distilled:
        raise CheckpointError(f"no distilled student has finished yet; pass --phase to export one of: {listing}")
    return distilled


def complete_checkpoint(exportable: Exportable) -> Optional[Path]:
    """The phase's newest checkpoint that passes its integrity check; None when there is none
    but the phase's end-of-phase export; otherwise a `CheckpointError` naming what was skipped."""
    folder, problems = first_complete(exportable.checkpoints, integrity_problem, lambda f: f.name)
    if folder is None and exportable.folder is None:
        raise CheckpointError(f"phase {exportable.phase}: no complete checkpoint ({'; '.join(problems)}) and no "
                              f"end-of-phase export")
    return folder


def model_states_file(folder: Path) -> Path:
    """The file with the loop's client state: `mp_rank_00_model_states.pt`, or under ZeRO-3
    (where every rank holds a part of the model) rank 0's `zero_pp_rank_0_mp_rank_00_model_states.pt`."""
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        if (folder / TAG / name).is_file():
            return folder / TAG / name
    raise CheckpointError(f"{folder} holds no student checkpoint (no {TAG}/*model_states.pt)")


def _checkpoint_weights(folder: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The student model's full fp32 weights in the checkpoint `folder`, and its step."""
    refuse_unsafe_pickles(folder)
    states = torch.load(model_states_file(folder), map_location="cpu", weights_only=True)
    if states.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0) > 0:  # fp32 weights from the partitions
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        full = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=TAG)
    else:
        full = states["module"]
    model = {k.removeprefix("model."): v.float().contiguous() for k, v in full.items() if k.startswith("model.")}
    return model, states["distillery"]["step"]


def _exported_weights(folder: Path, language_model: bool) -> dict[str, torch.Tensor]:
    """The weights a phase's train workers wrote when it ended (a language model's are its `lm`'s)."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    return {f"lm.{k}": v for k, v in weights.items()} if language_model else weights


def _load(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if hasattr(model, "lm"):  # a tied head is stored once: tie it again, then it is not missing
        model.lm.tie_weights()
        tied = {f"lm.{name}" for name, value in model.lm.state_dict().items()
                if any(value.data_ptr() == other.data_ptr() for k, other in model.lm.state_dict().items() if k != name)}
        missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(f"{source}: the student there does not fit student.model of the run's config "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")


def export_run(run_dir: Path, to: Optional[Path] = None, phase: Optional[str] = None,
               on_stage: Callable[[str, str], None] = lambda phase, stage: None) -> list[dict[str, Any]]:
    """Export `phase` of the run (default: every finished distilled student); return, per phase,
    what was written and the recorded against the reproduced metric. `on_stage(phase, stage)`
    is called as each of `STAGES` starts."""
    from ingest import load_dataset
    from orchestration.config import RunConfig

    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    recorded = recorded_phases(run_dir)
    chosen = chosen_phases(exportable_phases(run_dir, cfg.run.name, recorded), phase)
    dataset = load_dataset(cfg.data)
    reference = np.load(run_dir / REFERENCE_FILE) if (run_dir / REFERENCE_FILE).is_file() else None
    out = []
    for exportable in chosen:
        target = (Path(to) / exportable.phase) if to else run_dir / "export" / exportable.phase
        stage = lambda name, phase=exportable.phase: on_stage(phase, name)  # noqa: E731
        row = _export_phase(cfg, dataset, exportable, target, reference, stage)
        row["recorded"] = recorded.get(exportable.phase, {}).get(row["metric"])
        out.append(row)
    return out


def _export_phase(cfg: Any, dataset: Any, exportable: Exportable, target: Path, reference: Optional[np.ndarray],
                  on_stage: Callable[[str], None]) -> dict[str, Any]:
    from safetensors.torch import save_model

    from teachers import resolve_model

    model = resolve_model(cfg.student.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=cfg.run.allowed_factory_modules).build()
    on_stage(STAGES[0])
    checkpoint = complete_checkpoint(exportable)
    on_stage(STAGES[1])
    if checkpoint is not None:
        weights, step = _checkpoint_weights(checkpoint)
        source = str(checkpoint)
    else:
        weights = _exported_weights(exportable.folder, hasattr(model, "lm"))
        step, source = None, str(exportable.folder)
    _load(model, weights, source)
    on_stage(STAGES[2])
    target.mkdir(parents=True, exist_ok=True)
    # save_model stores tied weights (a language model's embedding and head) once
    save_model(model, str(target / "model.safetensors"), metadata={"run": cfg.run.name, "phase": exportable.phase,
                                                                   "step": str(step)})
    out: dict[str, Any] = {"phase": exportable.phase, "step": step, "source": source, "folder": str(target),
                           "parameters": sum(p.numel() for p in model.parameters())}
    model.eval()
    if hasattr(model, "lm"):  # a Hugging Face causal LM: its own folder, with the run's tokenizer
        from ingest import load_tokenizer

        model.lm.save_pretrained(str(target / "hf"), safe_serialization=True)
        load_tokenizer(str(cfg.data.tokenizer)).save_pretrained(str(target / "hf"))
        out["hf_folder"] = str(target / "hf")
    on_stage(STAGES[3])
    out.update(score_export(model, dataset, reference))
    return out


def score_export(model: torch.nn.Module, dataset: Any, reference: Optional[np.ndarray]) -> dict[str, Any]:
    """The run's own metric of an exported student on the test split: `metric`, `reproduced`
    and, for an encoder, the rank agreement beside the mean cosine."""
    from orchestration.teacher_training import accuracy, perplexity
    from students import embedding_agreement

    if hasattr(model, "lm"):
        return {"metric": "test_perplexity", "reproduced": perplexity(model, dataset.test)}
    if dataset.kind != "embedding":
        return {"metric": "test_accuracy", "reproduced": accuracy(model, dataset.test.x, dataset.test.y)}
    if reference is None:
        raise CheckpointError(f"the run saved no {REFERENCE_FILE}: an encoder is scored against its teachers' "
                              f"test embeddings, which the run writes when its teachers are deployed")
    with torch.no_grad():
        embeddings = np.concatenate([model(torch.as_tensor(dataset.test.x[i:i + 256])).float().numpy()
                                     for i in range(0, len(dataset.test.x), 256)])
    agreement = embedding_agreement(embeddings, reference)
    return {"metric": "test_cosine", "reproduced": agreement["test_cosine"],
            "test_rank_agreement": agreement["test_rank_agreement"]}
