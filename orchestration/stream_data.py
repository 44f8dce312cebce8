"""The students' stream of a `data.source` with `stream: true`: a Ray Data dataset read from
the source's files (`read_parquet` / `read_json` / `read_csv`, `read_binary_files` for an
image folder or text files, a datasource of one read task per Arrow file for a saved Hugging
Face dataset), turned into training columns in `map_batches` (images decoded, text cut into
lines, language-model rows tokenized), and handed to the `TorchTrainer`, which splits it
between the train workers (`ray.train.get_dataset_shard` in `students.train_loop`)."""

from __future__ import annotations

from typing import Any

from ingest import DataConfig

STREAM_BLOCK_BYTES = 16 * 1024 * 1024


def students_dataset(data: DataConfig) -> Any:
    """The transfer split (or train without its held-out test rows) as a Ray Data dataset of
    `id`, `x`, `y` and, where the source has them, `teacher_x` and `task`; a language-model
    source's rows are tokenized in the read tasks (`x`: the token sequences)."""
    import ray.data

    from ingest import hf_datasource, image_classes, source_files, to_lm_stream_rows, to_stream_rows

    source = data.source
    if source.format == "images":  # the class folders listed once here, not in every block's task
        source = source.model_copy(update={"classes": image_classes(source)})
    context = ray.data.DataContext.get_current()  # a dataset keeps the context it was made in
    context.enable_progress_bars = False  # the run's progress lines report the students' samples/s
    context.print_on_execution_start = False
    # the file-listing step of Ray Data's newer Parquet reader asks for a whole CPU, which a cluster whose CPUs
    # the train workers and teachers hold never frees; the read tasks below list their own files
    context.use_datasource_v2 = False
    # blocks of 16 MiB rather than 128: the first batch of an epoch waits for one block to be read and converted
    context.target_max_block_size = STREAM_BLOCK_BYTES
    path = source.transfer or source.train
    rows, args = (to_lm_stream_rows, (data, path)) if data.language_model else (to_stream_rows, (source, path))
    if source.format in ("images", "text"):
        filesystem, files = _whole_files(source.format, path)
        # whole files, decoded or cut into lines in map_batches as the in-memory path does it (a line's id is its
        # file and line number, which Ray Data's line reader does not keep)
        dataset = ray.data.read_binary_files(files, filesystem=filesystem, include_paths=True,
                                             num_cpus=source.read_cpus)
    elif source.format == "hf_dataset":
        dataset = ray.data.read_datasource(hf_datasource(path, source.columns.id), num_cpus=source.read_cpus)
    else:
        filesystem, files = source_files(path)
        read = {"parquet": ray.data.read_parquet, "jsonl": ray.data.read_json, "csv": ray.data.read_csv}[source.format]
        # one block per file at most to start with, so the order, and with it the batch ids, do not depend on the
        # cluster's CPU count; Ray Data still cuts large blocks to its target size as it reads
        dataset = read(files, filesystem=filesystem, override_num_blocks=len(files), num_cpus=source.read_cpus)
    return dataset.map_batches(rows, batch_size=None, batch_format="pyarrow", fn_args=args, zero_copy_batch=True,
                               num_cpus=source.read_cpus)  # whole blocks: fewer calls


def _whole_files(fmt: str, path: str) -> tuple[Any, list[str]]:
    from ingest import image_files, source_files

    if fmt == "images":
        filesystem, _, files = image_files(path)
        return filesystem, files
    return source_files(path)


def stream_data_config() -> Any:
    """Split the students' dataset only, in a fixed order and without locality (each epoch's
    shards, and so a resumed epoch's batches, are the same on every run), equal rows per worker
    (the workers step in lockstep)."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    from ingest import TRAIN_DATASET

    return DataConfig(datasets_to_split=[TRAIN_DATASET], execution_options=ExecutionOptions(preserve_order=True),
                      enable_shard_locality=False)
