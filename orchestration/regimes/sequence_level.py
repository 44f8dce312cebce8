"""Sequence-level KD (Kim and Rush 2016): the students fine-tune on the teachers' sampled
completions of the prompts instead of on the teachers' per-token distributions.

Config: `generate` (`GenerateConfig`: how the teachers sample) and
`distill.methods.<name>.train_data: generated`, checked by `check_sequence_level`. Phases: a
`train_data: generated` method's phase reads the generated dataset (`orchestration.phases`);
`orchestration.generate` writes it through Ray Data and the Serve teachers before the
students start (`distillery generate` does only that). No worker hook: the loop trains on
the generated rows like on any data.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from cluster import Strict


class GenerateConfig(Strict):
    """Sequence-level KD: how `distillery generate` (or a run with a `train_data: generated`
    method) has the teacher endpoints complete the prompts, through Ray Data and Serve, into a
    Parquet dataset the students are then fine-tuned on."""

    teacher: Optional[str] = Field(None, description="the teacher that writes the completions (default: the first)")
    prompts: Literal["student", "train"] = Field(
        "student", description="student: the prompts of the students' training samples; train: every training prompt")
    samples_per_prompt: int = Field(1, ge=1, le=64)
    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="sample among the k likeliest tokens; 0: all")
    seed: int = 0
    batch_size: int = Field(64, ge=1, description="prompts per generate call")
    output: Optional[str] = Field(None, description="the Parquet folder; default <output_dir>/<run>/generated")


def check_sequence_level(cfg: Any) -> None:
    generated = [n for n, m in (cfg.distill.methods or {}).items() if m.train_data == "generated"]
    if (generated or cfg.data.generated) and (cfg.data.dataset != "stdlib_functions" or not cfg.teachers):
        raise ValueError(f"distill.methods ({', '.join(generated) or 'data.generated'}): sequence-level KD "
                         f"fine-tunes on completions the run's teachers write; it needs teachers and "
                         f"data.dataset stdlib_functions")
    teacher = cfg.generate.teacher
    names = [t.name for t in cfg.teachers]
    if cfg.data.dataset == "stdlib_functions" and teacher is not None and teacher not in names:
        raise ValueError(f"generate.teacher: {teacher!r} is not a teacher of the run ({names})")
