"""Text as a classifier's input: a column of strings tokenized with the run's tokenizer into
int64 token ids of `data.sequence_length`, cut where longer and right-padded (the zoo's
`text_classifier` reads them). The tokenizer is loaded once per process, as Ray Data's read
tasks tokenize block after block."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

_TOKENIZERS: dict[str, Any] = {}


def cached_tokenizer(path: str) -> Any:
    from ingest.tokenizer import load_tokenizer

    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def token_ids(texts: list[str], tokenizer: Any, length: int, where: str,
              notes: Optional[list[str]] = None) -> np.ndarray:
    """int64 [N, length]: each text's tokens (with the tokenizer's own special tokens), cut to
    `length` and right-padded; texts cut are counted in `notes`."""
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{where}: the tokenizer has no pad token; text inputs are padded to data.sequence_length")
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    out = np.full((len(texts), length), tokenizer.pad_token_id, dtype=np.int64)
    longest = 0
    for row, ids in enumerate(encoded):
        out[row, :min(length, len(ids))] = ids[:length]
        longest = max(longest, len(ids))
    cut = sum(len(ids) > length for ids in encoded)
    if cut and notes is not None:
        notes.append(f"{where}: {cut} of {len(texts)} texts are longer than data.sequence_length {length} tokens "
                     f"(longest {longest}) and were cut")
    return out
