"""Prompt/completion text that is on every machine: the standard library's functions.

Each example is a function of Python's standard library: the prompt is its signature
(`def name(args):`), the completion its docstring (whitespace collapsed). Files are read in
sorted order and every fifth file is held out (`ingest.text_data`), so test examples come
from modules the models never saw. Examples become token sequences `prompt completion <eos>`
(`ingest.lm_sequences`), cut to `data.sequence_length` and right-padded; the loss and the soft
targets cover the completion and its end only (`ingest.token_layout`).

`python -m ingest.lm_data` rebuilds the byte-level BPE tokenizer that ships in
`ingest/tokenizers/stdlib-bpe-1024` (trained on the training files only).
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from cluster import exists, join, list_files, read_parquet, read_text
from ingest.text_data import HELD_OUT_EVERY, stdlib_files
from ingest.lm_sequences import prompt_completion_rows
from ingest.token_layout import CONTEXT, TARGET, pack, padded

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "sep_token": "<sep>", "eos_token": "<eos>"}
DEFAULT_TOKENIZER = "pkg:ingest/tokenizers/stdlib-bpe-1024"
GENERATED_MANIFEST = "manifest.json"  # written last by `distillery generate`


def _examples_of(path: Path) -> list[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text and len(text.split()) >= 5:
                out.append((f"def {node.name}({ast.unparse(node.args)}):", " ".join(text.split())))
    return out


@lru_cache(maxsize=1)
def function_examples() -> dict[str, list[tuple[str, str]]]:
    """{"train": [(prompt, completion), ...], "test": [...]}; parsed once per machine and Python
    version, then read from a cache file (parsing the whole stdlib takes seconds)."""
    files = stdlib_files()
    key = hashlib.sha256(f"{sys.version}|{files[0].parent if files else ''}|{len(files)}|v1".encode()).hexdigest()[:12]
    cache = Path.home() / ".cache" / "distillery" / f"stdlib_functions-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    examples: dict[str, list] = {"train": [], "test": []}
    for i, path in enumerate(files):
        examples["test" if i % HELD_OUT_EVERY == 0 else "train"] += _examples_of(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{id(examples)}.tmp")
    tmp.write_text(json.dumps(examples))
    tmp.replace(cache)
    return examples


def encode_examples(tokenizer, examples: list[tuple[str, str]], length: int) -> np.ndarray:
    """int64 [N, length]: `prompt completion <eos>` in the token layout (`ingest.token_layout`),
    cut to `length`, right-padded."""
    return padded(prompt_completion_rows(tokenizer, [p for p, _ in examples], [c for _, c in examples]), length)


def generated_sequences(folder: str | Path, length: int) -> np.ndarray:
    """int64 [N, length]: each generated row as its prompt (context) then its completion, its
    end token included (targets), cut to `length` and right-padded, ordered by (prompt
    row, sample)."""
    import pyarrow as pa

    folder = str(folder)
    if not exists(join(folder, GENERATED_MANIFEST)):
        raise FileNotFoundError(f"data.generated: {folder} holds no finished generated dataset (no {GENERATED_MANIFEST}); "
                                f"run `distillery generate` with the run's config first")
    # the manifest names its attempt's shards; one written before attempts: the folder's shards
    files = json.loads(read_text(join(folder, GENERATED_MANIFEST))).get("files") or list_files(folder, ".parquet")
    table = pa.concat_tables([read_parquet(join(folder, name), columns=["row", "sample", "prompt_ids", "completion_ids"])
                              for name in files])
    order = np.lexsort((table.column("sample").to_numpy(), table.column("row").to_numpy()))
    prompts, completions = table.column("prompt_ids").to_pylist(), table.column("completion_ids").to_pylist()
    return padded([np.concatenate([pack(prompts[j], CONTEXT), pack(completions[j], TARGET)]) for j in order], length)


def build_tokenizer(folder: Path, vocab_size: int = 1024) -> None:
    """Train a byte-level BPE on the training split's prompts and completions and save it in
    Hugging Face layout (deterministic: the same Python version gives the same vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    examples = function_examples()["train"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator((text for pair in examples for text in pair), trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS).save_pretrained(str(folder))


if __name__ == "__main__":
    target = Path(__file__).parent / "tokenizers" / "stdlib-bpe-1024"
    build_tokenizer(target)
    print(f"wrote {target}")
