"""Student models, KD terms, weighting, the run-control interface, the regime hooks and the
Ray Train loop that runs one phase after another.

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "CheckpointError": "checkpoint_files",
    "DataConfig": "config",
    "Dataset": "splits",
    "DistillConfig": "config",
    "GENERATED_MANIFEST": "lm_data",
    "Key": "run_control",
    "PROGRESS_FILE": "checkpoint",
    "Phase": "hooks",
    "PhaseHook": "hooks",
    "RunControl": "run_control",
    "SourceConfig": "config",
    "SpeculativeBatches": "speculative",
    "Split": "splits",
    "StreamedSplit": "splits",
    "StudentConfig": "config",
    "StudentJob": "job",
    "SyntheticInputs": "generator",
    "SyntheticStream": "generator",
    "TAG": "checkpoint",
    "TEXT_DATASETS": "config",
    "TRAIN_DATASET": "streamed",
    "Term": "losses",
    "Weighting": "weighting",
    "accuracy": "evaluation",
    "batch_id": "data",
    "check_distill": "config",
    "check_language_model": "config",
    "check_stream": "config",
    "check_terms": "losses",
    "check_weighting": "config",
    "embedding_agreement": "evaluation",
    "fake_quantize_model": "quantize",
    "feature_refs": "losses",
    "first_complete": "checkpoint_files",
    "frozen_forward": "generator",
    "hf_datasource": "hf_data",
    "image_classes": "image_data",
    "image_files": "image_data",
    "import_deepspeed": "engine",
    "integrity_problem": "checkpoint_files",
    "load_dataset": "data",
    "method_snapshots": "config",
    "method_terms": "losses",
    "needs_teacher": "losses",
    "post_training_quantized": "quantize",
    "preset_terms": "losses",
    "quantization_target": "export",
    "refuse_unsafe_pickles": "checkpoint_files",
    "refuse_zero3": "config",
    "row_numbers": "streamed",
    "self_distillation_exits": "losses",
    "snapshot_methods": "config",
    "source_files": "source_paths",
    "student_subset": "data",
    "teacher_feature_layers": "losses",
    "to_lm_stream_rows": "lm_source",
    "to_stream_rows": "file_data",
    "train_student": "train_loop",
}

__all__ = ["CheckpointError", "DataConfig", "Dataset", "DistillConfig", "GENERATED_MANIFEST", "Key", "PROGRESS_FILE",
           "Phase", "PhaseHook", "RunControl", "SourceConfig", "SpeculativeBatches", "Split",
           "StreamedSplit", "StudentConfig", "StudentJob", "SyntheticInputs", "SyntheticStream", "TAG",
           "TEXT_DATASETS", "TRAIN_DATASET", "Term", "Weighting", "accuracy", "batch_id", "check_distill",
           "check_language_model", "check_stream", "check_terms", "check_weighting", "embedding_agreement",
           "fake_quantize_model", "feature_refs", "first_complete", "frozen_forward", "hf_datasource",
           "image_classes", "image_files", "import_deepspeed", "integrity_problem", "load_dataset",
           "method_snapshots", "method_terms", "needs_teacher", "post_training_quantized", "preset_terms",
           "quantization_target", "refuse_unsafe_pickles", "refuse_zero3", "row_numbers",
           "self_distillation_exits", "snapshot_methods", "source_files", "student_subset",
           "teacher_feature_layers", "to_lm_stream_rows", "to_stream_rows", "train_student"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
