"""The data layer: a user's files and object stores, or a bundled set, turned into rows and
batches. Formats (Parquet, JSONL, CSV, images, text, saved Hugging Face datasets), the bundled
datasets, language-model rows, splits and hold-out, Ray Data streams, scans, batch plans and
batch ids, the tokenizer loader and the `data:` config section. It imports `cluster` only.

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "Batch": "batches",
    "DataConfig": "config",
    "Dataset": "splits",
    "GENERATED_MANIFEST": "lm_data",
    "ShardReader": "streamed",
    "SourceConfig": "config",
    "Split": "splits",
    "StreamedBatches": "streamed",
    "StreamedSplit": "splits",
    "TEXT_DATASETS": "config",
    "TRAIN_DATASET": "streamed",
    "TokenSpecials": "token_targets",
    "BatchId": "batches",
    "hf_datasource": "hf_data",
    "image_classes": "image_data",
    "image_files": "image_data",
    "load_dataset": "loading",
    "load_tokenizer": "tokenizer",
    "plan_epoch": "batches",
    "resolve_model_dir": "tokenizer",
    "row_keys": "row_hash",
    "source_files": "source_paths",
    "specials_of": "token_targets",
    "student_subset": "loading",
    "target_labels": "token_targets",
    "target_mask": "token_targets",
    "targets_per_sequence": "token_targets",
    "to_lm_stream_rows": "lm_source",
    "to_stream_rows": "file_data",
    "tokenizer_hash": "tokenizer",
}

__all__ = ["Batch", "BatchId", "DataConfig", "Dataset", "GENERATED_MANIFEST", "ShardReader", "SourceConfig",
           "Split", "StreamedBatches", "StreamedSplit", "TEXT_DATASETS", "TRAIN_DATASET", "TokenSpecials",
           "hf_datasource", "image_classes", "image_files", "load_dataset", "load_tokenizer", "plan_epoch",
           "resolve_model_dir", "row_keys", "source_files", "specials_of", "student_subset", "target_labels",
           "target_mask", "targets_per_sequence", "to_lm_stream_rows", "to_stream_rows", "tokenizer_hash"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
