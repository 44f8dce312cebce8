"""Student models, KD terms, weighting, the run-control interface, the regime hooks and the
Ray Train loop that runs one phase after another.

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "CheckpointError": "checkpoint_integrity",
    "DistillConfig": "config",
    "Key": "run_control",
    "PROGRESS_FILE": "checkpoint",
    "Phase": "hooks",
    "PhaseHook": "hooks",
    "RunControl": "run_control",
    "SpeculativeBatches": "speculative_batches",
    "StudentConfig": "config",
    "StudentJob": "job",
    "SyntheticInputs": "generator",
    "SyntheticStream": "generator",
    "TAG": "checkpoint",
    "Term": "losses",
    "Weighting": "weighting",
    "accuracy": "evaluation",
    "check_distill": "config",
    "check_language_model": "config",
    "check_stream": "config",
    "check_terms": "losses",
    "check_weighting": "config",
    "embedding_agreement": "evaluation",
    "fake_quantize_model": "quantize",
    "feature_refs": "losses",
    "first_complete": "checkpoint_integrity",
    "frozen_forward": "generator",
    "import_deepspeed": "engine",
    "integrity_problem": "checkpoint_integrity",
    "method_snapshots": "config",
    "method_terms": "losses",
    "needs_teacher": "losses",
    "post_training_quantized": "quantize",
    "preset_terms": "losses",
    "quantization_target": "phase_export",
    "record_logprob": "teacher_merge",
    "refuse_unsafe_pickles": "checkpoint_integrity",
    "refuse_zero3": "config",
    "self_distillation_exits": "losses",
    "snapshot_methods": "config",
    "teacher_feature_layers": "losses",
    "train_student": "train_loop",
}

__all__ = ["CheckpointError", "DistillConfig", "Key", "PROGRESS_FILE", "Phase", "PhaseHook", "RunControl",
           "SpeculativeBatches", "StudentConfig", "StudentJob", "SyntheticInputs", "SyntheticStream", "TAG", "Term",
           "Weighting", "accuracy", "check_distill", "check_language_model", "check_stream", "check_terms",
           "check_weighting", "embedding_agreement", "fake_quantize_model", "feature_refs", "first_complete",
           "frozen_forward", "import_deepspeed", "integrity_problem", "method_snapshots", "method_terms",
           "needs_teacher", "post_training_quantized", "preset_terms", "quantization_target", "record_logprob",
           "refuse_unsafe_pickles", "refuse_zero3", "self_distillation_exits", "snapshot_methods",
           "teacher_feature_layers", "train_student"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
