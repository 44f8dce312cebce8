"""What one student training (a "phase" of a run) needs, as plain picklable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from cluster.config import DataConfig, DistillConfig, GeneratorConfig, SpeculativeConfig, StudentConfig
from students.losses import Term
from students.online import OnlineRole
from students.weighting import Weighting
from teachers.backend import ResolvedModel


@dataclass
class StudentJob:
    """One student training: the KD student for a seed, or its no-KD baseline.

    Args:
        phase: name of this training within the run ("kd-seed0", "baseline-seed0").
        terms: the weighted loss terms (students.losses.Term); the baseline has only "ce".
        use_teachers: whether the worker asks the teacher set for soft targets.
        orchestrator: the run's orchestrator actor handle (teacher set, progress sink).
        source: where soft targets come from: "served" (Serve or gRPC teachers, the normal
            path), "offline" (the Parquet store of `distillery precompute`), "local" (teachers
            run in the worker) or "precomputed" (computed before training); the last two are
            baselines for `benchmarks/pipeline.py`.
        stores: for "offline", the store folder of each teacher.
        teacher_snapshot: the phase whose frozen student is this phase's only teacher (born-again
            networks); rank 0 has the orchestrator serve it for the phase.
        export_snapshot: whether rank 0 hands the trained student to the orchestrator at the end
            of the phase, for a later phase's `teacher_snapshot`.
        train: False scores the student as initialized (the untrained baseline of encoders).
        init_seed: the seed of the student's initial weights (default `seed`, so a KD student and
            its baseline start alike); born-again generations each start from their own.
        train_on: (data column, values): train only on the samples whose column holds one of
            the values (a task of a continual run); all samples when None.
        replay: (data column, earlier values, samples per value): the first samples of each
            earlier task, trained on again with this one (continual replay).
        init_from: the phase whose exported student is this phase's initial weights (the
            previous task of a continual run); `init_seed` when None.
        eval_by: (data column, values): also score the test samples of each value apart
            (`test_accuracy/<column><value>`: a continual run's task-by-task accuracy).
        teachers: the teachers of the run this phase learns from (all when None).
        weighting: how those teachers' soft targets merge per sample (students.weighting).
        trainer: the peer whose trainer runs this phase (online co-training); None otherwise.
        store_memory: at the end of the phase, the orchestrator stores this student's soft targets
            on the first `store_memory` training samples of its task (continual replay with
            stored targets); None: nothing is stored.
        memory_from: the phases whose stored memory targets replace the teachers' targets on
            replayed samples (the samples' `row` column finds them).
        generator: also learn on synthetic inputs where the teachers and the student disagree
            (students.generator); None: real data only.
        online: the phase's part in online co-training (publishing weights, learning from live
            peers); None for every other phase, the peers' independent baselines included.
        export_dir: where the trained student is written in Hugging Face layout at the end of
            the phase (language-model students); None: not exported.
        quantize_bits: train with weights fake-quantized to this many bits per channel
            (quantized distillation) and export the integers; None: full precision.
        ptq_bits: also score this student with its weights rounded to each of these bit widths
            after training (post-training quantization: the baseline of quantized distillation).
        speculative: learn on the student's completions of each batch's prompts, corrected by the
            teacher (speculative KD); None: on the data as it is.
    """

    phase: str
    seed: int
    terms: list[Term]
    use_teachers: bool
    model: ResolvedModel
    student: StudentConfig
    distill: DistillConfig
    data: DataConfig
    orchestrator: Optional[Any] = None
    source: Literal["served", "offline", "local", "precomputed"] = "served"
    stores: dict[str, str] = field(default_factory=dict)
    teacher_snapshot: Optional[str] = None
    export_snapshot: bool = False
    train: bool = True
    init_seed: Optional[int] = None
    train_on: Optional[tuple[str, tuple[int, ...]]] = None
    replay: Optional[tuple[str, tuple[int, ...], int]] = None
    init_from: Optional[str] = None
    eval_by: Optional[tuple[str, tuple[int, ...]]] = None
    teachers: Optional[list[str]] = None
    weighting: Weighting = field(default_factory=Weighting)
    trainer: Optional[str] = None
    online: Optional[OnlineRole] = None
    generator: Optional[GeneratorConfig] = None
    store_memory: Optional[int] = None
    memory_from: tuple[str, ...] = ()
    export_dir: Optional[str] = None
    quantize_bits: Optional[int] = None
    ptq_bits: tuple[int, ...] = ()
    speculative: Optional[SpeculativeConfig] = None
