"""Sequence-level KD (Kim and Rush 2016): the students fine-tune on the teachers' sampled
completions of the prompts instead of on the teachers' per-token distributions.

Config: `generate` (`GenerateConfig`: how the teachers sample) and
`distill.methods.<name>.train_data: generated`, checked by `check_sequence_level`. Phases: a
`train_data: generated` method's phase reads the generated dataset (`orchestration.phases`);
`generated_for` has `generate` write it through Ray Data and the Serve teachers before the
students start (`distillery generate` does only that). No worker hook: the loop trains on
the generated rows like on any data.

Ray Data splits the prompts into batches; each batch is one `generate` call to the teacher's
Serve application (its replicas sample, the driver never touches tokens). The output is
written to a partial folder and becomes the dataset only once its manifest is written, with
the key it was made for (teacher version, prompts, sampling): a later run with the same key
reuses it, any other key writes it again.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pyarrow as pa
from pydantic import Field
from rich.console import Console

from cluster import (Strict, drop_other_attempts, exists, filesystem_for, is_uri, join, kd_phase, list_files,
                     new_attempt, read_text, write_text)
from ingest import Dataset, GENERATED_MANIFEST as MANIFEST, student_subset
from orchestration.progress import progress_blocks


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
    output: Optional[str] = Field(None, description="the Parquet folder (a local folder or a URI every node "
                                                    "reads); default <output_dir>/<run>/generated")


def check_sequence_level(cfg: Any) -> None:
    generated = [n for n, m in (cfg.distill.methods or {}).items() if m.train_data == "generated"]
    if (generated or cfg.data.generated) and (not cfg.data.language_model or not cfg.teachers):
        raise ValueError(f"distill.methods ({', '.join(generated) or 'data.generated'}): sequence-level KD "
                         f"fine-tunes on completions the run's teachers write; it needs teachers and "
                         f"language-model data (stdlib_functions or a prompt/completion source)")
    teacher = cfg.generate.teacher
    names = [t.name for t in cfg.teachers]
    if cfg.data.language_model and teacher is not None and teacher not in names:
        raise ValueError(f"generate.teacher: {teacher!r} is not a teacher of the run ({names})")


def generated_for(cfg: Any, dataset: Any, teachers: dict[str, dict[str, Any]], done: dict[str, Any],
                  console: Any) -> Optional[str]:
    """Sequence-level KD: the teachers' completions the `train_data: generated` methods fine-tune
    on, written now unless they are current (or every such phase is already done)."""
    methods = cfg.distill.methods or {}
    wanted = [kd_phase(name, seed) for seed in cfg.run.seeds for name, m in methods.items()
              if m.train_data == "generated"]
    if not wanted or all(phase in done for phase in wanted):
        return None
    versions = {name: info["model_version"] for name, info in teachers.items() if "model_version" in info}
    return generate(cfg, dataset, versions, console)


# --- generation: the teachers' completions, through Ray Data and Serve ------------------------------
def prompt_part(sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a prompt and a target after it, those prompts packed and right-padded:
    everything before each row's first target, `ingest.token_layout`)."""
    from ingest import prompt_lengths, target_mask

    ends = prompt_lengths(sequences)
    prompts = np.where(np.arange(sequences.shape[1])[None, :] < ends[:, None], sequences, 0)
    rows = np.flatnonzero((ends > 0) & target_mask(sequences).any(1))
    return rows, prompts[rows]


def generated_folder(cfg: Any) -> str:
    """`generate.output`, else `<run.output_dir>/<run>/generated`: a local folder made absolute,
    or a URI (written there directly, read there by the students)."""
    where = cfg.generate.output or join(cfg.run.output_dir, cfg.run.name, "generated")
    return where if is_uri(where) else str(Path(where).resolve())


def generation_key(cfg: Any, teacher: str, version: str, prompts: np.ndarray) -> dict[str, Any]:
    """What the generated dataset was made from; a different key means generating again."""
    sampling = cfg.generate.model_dump(exclude={"output", "teacher", "batch_size"})
    return {"teacher": teacher, "teacher_version": version, "tokenizer": cfg.data.tokenizer,
            "prompts": hashlib.sha256(np.ascontiguousarray(prompts).tobytes()).hexdigest()[:16],
            "prompt_count": int(len(prompts)), **sampling}


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from ingest import load_tokenizer

    return load_tokenizer(path)


def _text(tokenizer_path: str, rows: list[list[int]]) -> list[str]:
    return _tokenizer(tokenizer_path).batch_decode(rows, skip_special_tokens=False)


class CompleteWithTeacher:
    """Ray Data callable: one `generate` call to the teacher's Serve app per batch of prompts."""

    def __init__(self, app: str, sampling: dict[str, Any], tokenizer: str):
        from ray import serve

        self.handle = serve.get_app_handle(app)
        self.sampling, self.tokenizer = sampling, tokenizer

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ingest import CONTEXT, pack, padded

        rows = batch.column("prompt_ids").to_pylist()
        prompts = padded([pack(ids, CONTEXT) for ids in rows], max(map(len, rows)))
        first_row, first_sample = batch.column("row")[0].as_py(), batch.column("sample")[0].as_py()
        # a batch's seed follows from its first row: the same key writes the same completions
        seed = int(self.sampling["seed"]) * 1_000_003 + first_row * 131 + first_sample
        answer = self.handle.generate.remote(prompts, {**self.sampling, "seed": seed}).result(timeout_s=600)
        completions = [c[:n].tolist() for c, n in zip(np.asarray(answer["completions"]), answer["lengths"])]
        return (batch
                .append_column("prompt", pa.array(_text(self.tokenizer, rows)))
                .append_column("completion_ids", pa.array(completions, pa.list_(pa.int64())))
                .append_column("completion", pa.array(_text(self.tokenizer, completions)))
                .append_column("teacher_version", pa.array([answer["version"]] * len(prompts))))


def generate(cfg: Any, dataset: Dataset, teacher_versions: dict[str, str], console: Console) -> str:
    """Write (or reuse) the generated dataset of `cfg`; the teachers must be deployed (Serve)."""
    import ray

    from ingest import token_ids
    from teachers import app_name

    gen = cfg.generate
    teacher = gen.teacher or cfg.teachers[0].name
    train = dataset.train if gen.prompts == "train" else student_subset(dataset.train, cfg.data.student_train_samples)
    rows, prompts = prompt_part(train.x)
    key = generation_key(cfg, teacher, teacher_versions[teacher], prompts)
    folder = generated_folder(cfg)
    manifest = join(folder, MANIFEST)
    if exists(manifest) and json.loads(read_text(manifest))["key"] == key:
        console.print(f"generated completions in {folder} are current, reused")
        return folder
    attempt = new_attempt()
    filesystem, shards = filesystem_for(join(folder, attempt))
    repeat = gen.samples_per_prompt
    items = pa.table({"row": np.repeat(rows, repeat).astype(np.int64),
                      "sample": np.tile(np.arange(repeat), len(rows)).astype(np.int64),
                      "prompt_ids": pa.array([token_ids(p[p != 0]).tolist() for p in prompts for _ in range(repeat)],
                                             pa.list_(pa.int64()))})
    console.print(f"teacher {teacher}: completing {len(rows)} prompts ({gen.samples_per_prompt} per prompt, "
                  f"up to {gen.max_new_tokens} tokens, temperature {gen.temperature:g}) with Ray Data -> {folder}")
    sampling = {"max_new_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p,
                "top_k": gen.top_k, "seed": gen.seed}
    (ray.data.from_arrow(progress_blocks(items, gen.batch_size))
     .map_batches(CompleteWithTeacher, batch_size=gen.batch_size, batch_format="pyarrow", concurrency=2,
                  num_cpus=0.05, fn_constructor_kwargs={"app": app_name(teacher), "sampling": sampling,
                                                        "tokenizer": cfg.data.tokenizer})
     .write_parquet(shards, filesystem=filesystem))
    files = [f"{attempt}/{name}" for name in list_files(join(folder, attempt), ".parquet")]
    write_text(manifest, json.dumps({"key": key, "rows": len(items), "files": files}, indent=2))
    drop_other_attempts(folder, kept=attempt)  # what interrupted earlier attempts left
    console.print(f"teacher {teacher}: wrote {len(items)} completions")
    return folder

