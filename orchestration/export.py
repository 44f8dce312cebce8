"""`distillery export`: the student of a run's last checkpoint, gathered into safetensors.

Reads `<run_dir>/train/<run>-students/`: the newest checkpoint that passes its integrity check
(and whose pickles are safe to load), gathers the full fp32 weights from every rank's ZeRO
partitions (stages 0 to 3, on CPU, no Ray) and writes the student model's weights (the
projectors and exits the KD terms added are left out):

- `model.safetensors` for every student, loadable into the config's `student.model`;
- for a Hugging Face language-model student, its Hugging Face folder too (config, weights,
  tokenizer), loadable with `AutoModelForCausalLM.from_pretrained`.

The exported model is then scored on the run's test split and compared with the metric the
run recorded for that phase.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from students import CheckpointError, first_complete, integrity_problem, refuse_unsafe_pickles, TAG


def newest_complete_checkpoint(train_dir: Path) -> Path:
    """The newest checkpoint folder of a Ray Train run that passes its integrity check."""
    folders = sorted((p for p in train_dir.glob("checkpoint_*") if p.is_dir()), reverse=True)
    folder, problems = first_complete(folders, integrity_problem, lambda f: f.name)
    if folder is None:
        raise CheckpointError(f"no complete checkpoint under {train_dir}" + (": " + "; ".join(problems) if problems else
                              "; has the run trained a checkpoint yet (student.checkpoint_every)?"))
    return folder


def model_states_file(folder: Path) -> Path:
    """The file with the loop's client state: `mp_rank_00_model_states.pt`, or under ZeRO-3
    (where every rank holds a part of the model) rank 0's `zero_pp_rank_0_mp_rank_00_model_states.pt`."""
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        if (folder / TAG / name).is_file():
            return folder / TAG / name
    raise CheckpointError(f"{folder} holds no student checkpoint (no {TAG}/*model_states.pt)")


def _student_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The student model's full fp32 weights and the loop's client state in `folder`."""
    refuse_unsafe_pickles(folder)
    states = torch.load(model_states_file(folder), map_location="cpu", weights_only=True)
    if states.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0) > 0:  # fp32 weights from the partitions
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        full = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=TAG)
    else:
        full = states["module"]
    model = {k.removeprefix("model."): v.float().contiguous() for k, v in full.items() if k.startswith("model.")}
    return model, states["distillery"]


STAGES = ("checking the checkpoints' integrity", "gathering the student's weights from the ZeRO partitions",
          "writing the export", "scoring the export on the test split")


def export_run(run_dir: Path, to: Optional[Path] = None,
               on_stage: Callable[[str], None] = lambda stage: None) -> dict[str, Any]:
    """Export the student of the run's newest complete checkpoint; return what was written and
    the recorded against the reproduced metric. `on_stage` is called as each of `STAGES` starts."""
    from safetensors.torch import save_model

    from orchestration.config import RunConfig
    from orchestration.teacher_training import accuracy, perplexity
    from students import load_dataset
    from teachers import resolve_model

    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    train_dir = run_dir / "train" / f"{cfg.run.name}-students"
    on_stage(STAGES[0])
    folder = newest_complete_checkpoint(train_dir)
    on_stage(STAGES[1])
    weights, client = _student_weights(folder)
    phase = client["phase"]
    dataset = load_dataset(cfg.data)
    model = resolve_model(cfg.student.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=cfg.run.allowed_factory_modules).build()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: the checkpoint's student does not fit student.model of {run_dir / 'config.json'}"
                              f" (missing {missing[:5]}, unexpected {unexpected[:5]})")
    on_stage(STAGES[2])
    target = Path(to) if to else run_dir / "export" / phase
    target.mkdir(parents=True, exist_ok=True)
    # save_model stores tied weights (a language model's embedding and head) once
    save_model(model, str(target / "model.safetensors"), metadata={"run": cfg.run.name, "phase": phase,
                                                                   "step": str(client["step"])})
    out: dict[str, Any] = {"phase": phase, "step": client["step"], "checkpoint": str(folder), "folder": str(target),
                           "parameters": sum(p.numel() for p in model.parameters())}
    model.eval()
    if hasattr(model, "lm"):  # a Hugging Face causal LM: its own folder, with the run's tokenizer
        from teachers import load_tokenizer

        model.lm.save_pretrained(str(target / "hf"), safe_serialization=True)
        load_tokenizer(str(cfg.data.tokenizer)).save_pretrained(str(target / "hf"))
        out["hf_folder"] = str(target / "hf")
    on_stage(STAGES[3])
    if hasattr(model, "lm"):
        out.update(metric="test_perplexity", reproduced=perplexity(model, dataset.test))
    else:
        out.update(metric="test_accuracy", reproduced=accuracy(model, dataset.test.x, dataset.test.y))
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").is_file() else {}
    out["recorded"] = state.get("phases", {}).get(phase, {}).get(out["metric"])
    return out
