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
    "BatchId": "batches",
    "DataConfig": "config",
    "Dataset": "splits",
    "GENERATED_MANIFEST": "lm_data",
    "SMOLLM2": "gguf_folder",
    "is_gguf": "gguf_folder",
    "ShardReader": "streamed",
    "SourceConfig": "config",
    "Split": "splits",
    "StreamedBatches": "streamed",
    "StreamedSplit": "splits",
    "TEXT_DATASETS": "config",
    "TRAIN_DATASET": "streamed",
    "CONTEXT": "token_layout",
    "PAD": "token_layout",
    "TARGET": "token_layout",
    "attention_mask": "token_layout",
    "hf_datasource": "hf_data",
    "image_classes": "image_data",
    "image_files": "image_data",
    "load_dataset": "loading",
    "load_tokenizer": "tokenizer",
    "pack": "token_layout",
    "padded": "token_layout",
    "plan_epoch": "batches",
    "prompt_lengths": "token_layout",
    "resolve_model_dir": "tokenizer",
    "row_keys": "row_hash",
    "sequence_lengths": "token_layout",
    "source_files": "source_paths",
    "student_subset": "loading",
    "target_labels": "token_layout",
    "target_mask": "token_layout",
    "targets_per_sequence": "token_layout",
    "to_lm_stream_rows": "lm_source",
    "to_stream_rows": "file_data",
    "token_ids": "token_layout",
    "token_roles": "token_layout",
    "tokenizer_hash": "tokenizer",
    "with_role": "token_layout",
}

__all__ = ["Batch", "BatchId", "CONTEXT", "DataConfig", "Dataset", "GENERATED_MANIFEST", "PAD", "SMOLLM2", "ShardReader",
           "SourceConfig", "Split", "StreamedBatches", "StreamedSplit", "TARGET", "TEXT_DATASETS", "TRAIN_DATASET",
           "attention_mask", "hf_datasource", "image_classes", "image_files", "is_gguf", "load_dataset", "load_tokenizer",
           "pack", "padded", "plan_epoch", "prompt_lengths", "resolve_model_dir", "row_keys", "sequence_lengths",
           "source_files", "student_subset", "target_labels", "target_mask", "targets_per_sequence",
           "to_lm_stream_rows", "to_stream_rows", "token_ids", "token_roles", "tokenizer_hash",
           "with_role"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
