"""Hugging Face causal language models as teachers and students (`models.hf_lm:causal_lm`).

A model comes from a folder in Hugging Face layout, `pkg:<package>/<folder>`, a GGUF file, a
hub id on a cluster with internet access (safetensors only, no remote code), or is built from a
`config` mapping (`{model_type: gpt2, n_layer: 2, ...}`) with random weights: what tests and
the CPU configs use, and what a teacher trained by Distillery starts from.

The module maps packed token sequences [B, L] to the logits of their *target positions* [N, V]
(`ingest.token_layout`: the ids with their roles; the attention mask is the roles'): the transformer runs over the whole sequence, the LM head only over
the N positions that are taught, so padding and prompt rows are never computed. Teachers run
the head in chunks of `head_chunk` rows, so a long sequence never holds [L, V] logits at once.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import nn

from ingest import (attention_mask, load_tokenizer, resolve_model_dir, sequence_lengths, target_labels, target_mask,
                    targets_per_sequence, token_ids, tokenizer_hash)
from models.version import checkpoint_version


class CausalLM(nn.Module):
    output_kind = "tokens"

    def __init__(self, lm: nn.Module, tokenizer_hash: str, model_version: str, vocab_size: int,
                 specials: dict[str, Optional[int]], head_chunk: int = 4096):
        super().__init__()
        self.lm = lm
        self.tokenizer_hash = tokenizer_hash
        self.model_version = model_version
        self.vocab_size = vocab_size  # the tokenizer's; a model's padded vocabulary is cut to it
        self.head_chunk = head_chunk
        self.eos, self.bos = specials.get("eos"), specials.get("bos")
        # what fills the left of a batch of prompts in generation (any id: it is masked out)
        self.pad = next((i for i in (specials.get("pad"), self.eos, 0) if i is not None))
        self.positions: Optional[int] = None

    def _ids(self, x: torch.Tensor) -> torch.Tensor:
        """The token ids of packed sequences (`ingest.token_layout`), checked against the vocabulary."""
        ids = token_ids(x)
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got up to {int(ids.max())}; tokenize "
                             f"with the model's own tokenizer (data.tokenizer)")
        return ids

    def target_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d]: the last hidden state at every target position, row-major. The columns after
        the batch's longest sequence hold only padding and are never computed."""
        x = x[:, :max(1, int(sequence_lengths(x).max()))] if x.numel() else x
        hidden = self.lm.base_model(input_ids=self._ids(x), attention_mask=attention_mask(x).long()).last_hidden_state
        return hidden[:, :-1][target_mask(x)]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, d] -> [n, V] logits over the tokenizer's vocabulary."""
        return self.lm.get_output_embeddings()(hidden)[:, :self.vocab_size]

    def head_chunks(self, hidden: torch.Tensor) -> Iterator[torch.Tensor]:
        """The logits of `hidden`'s rows, `head_chunk` rows at a time."""
        for start in range(0, len(hidden), self.head_chunk):
            yield self.head(hidden[start:start + self.head_chunk])

    def summed_nll(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The summed negative log-likelihood (float64) of the target tokens of packed sequences
        `x`, and their number. The head and the log-softmax run `head_chunk` rows at a time, in
        float32 for that chunk only: no [N, V] logits of the whole batch ever exist."""
        labels = target_labels(x).to(x.device)
        hidden = self.target_hidden(x)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for start, logits in zip(range(0, len(hidden), self.head_chunk), self.head_chunks(hidden)):
            part = labels[start:start + len(logits)]
            total += torch.nn.functional.cross_entropy(logits.float(), part, reduction="sum").double()
        return total, int(len(labels))

    @property
    def output_space(self) -> str:
        """The space its outputs live in, from its tokenizer (no forward needed)."""
        return f"tokens:{self.vocab_size}:{self.tokenizer_hash}"

    @property
    def never_generated(self) -> tuple[int, ...]:
        """Token ids that only begin sequences (a bos that is not also the end): never sampled."""
        return () if self.bos is None or self.bos == self.eos else (self.bos,)

    def position_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, V]: the next-token logits at every position (the teacher's scoring call)."""
        out = self.lm(input_ids=self._ids(x), attention_mask=attention_mask(x).long())
        return out.logits[..., :self.vocab_size]

    def targets_per_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return targets_per_sequence(x)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.target_hidden(input_ids))

    @torch.no_grad()
    def generate(self, prompts: torch.Tensor, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample completions of packed prompts [B, L] (every entry of a row that is not padding
        is the prompt; `ingest.token_layout`): (token ids int64 [B, max_new_tokens], zeros after
        each row's end; lengths int64 [B], the end token included). The completion stops at
        the model's last position. temperature 0 decodes greedily."""
        lengths = sequence_lengths(prompts).cpu()
        width = int(lengths.max())
        ids = self._ids(prompts)
        left = torch.full((len(prompts), width), self.pad, dtype=torch.long, device=prompts.device)
        mask = torch.zeros_like(left)
        for row, n in enumerate(lengths.tolist()):  # batched decoding continues every row at its end
            left[row, width - n:], mask[row, width - n:] = ids[row, :n], 1
        room = max_new_tokens if self.positions is None else min(max_new_tokens, self.positions - width)
        completion = torch.zeros((len(prompts), max_new_tokens), dtype=torch.long)
        if room <= 0:  # the prompts fill the model's context: nothing to add
            return completion, torch.zeros(len(prompts), dtype=torch.long)
        sampling = {"do_sample": False} if temperature == 0 else {
            "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None}
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            out = self.lm.generate(input_ids=left, attention_mask=mask, max_new_tokens=room, pad_token_id=self.pad,
                                   eos_token_id=self.eos, suppress_tokens=list(self.never_generated) or None,
                                   **sampling)
        finally:
            torch.random.set_rng_state(generator_state)
        new = out[:, width:].cpu()
        ended = (new == self.eos) if self.eos is not None else torch.zeros_like(new, dtype=torch.bool)
        sizes = torch.where(ended.any(1), ended.int().argmax(1) + 1, torch.full((len(new),), new.shape[1]))
        keep = torch.arange(new.shape[1])[None, :] < sizes[:, None]
        completion[:, :new.shape[1]] = torch.where(keep, new, 0)
        return completion, sizes.long()


def _positions(config: Any) -> Optional[int]:
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def causal_lm(in_features: int, num_classes: int, tokenizer: str, path: Optional[str] = None,
              config: Optional[dict[str, Any]] = None, pretrained: bool = True, layers: Optional[list[int]] = None,
              dtype: Optional[str] = None, head_chunk: int = 4096) -> CausalLM:
    """Factory: a causal language model over the run's token sequences.

    Args:
        in_features: the dataset's sequence length (checked against the model's positions).
        num_classes: the run's vocabulary size (unused: the model predicts its own tokenizer's
            ids, and a teacher whose tokenizer is not the run's is refused when it is added).
        tokenizer: the model's tokenizer (folder, `pkg:` folder, GGUF file or hub id); its
            content hash is what `teacher add` and the students compare with `data.tokenizer`.
        path: a pretrained model: a folder (one safetensors file, or shards with their index),
            `pkg:` folder, GGUF file (converted once per node, `ingest.gguf_folder`) or hub id; or
        config: a transformers config mapping with `model_type`, for a model with random
            weights (vocab_size and the special token ids default to the tokenizer's).
        pretrained: with `path`, load its weights; False builds it from its config only.
        layers: keep only these decoder layers, in this order (a student made from its
            teacher: `[0, 2, 4, ...]`), with the embeddings, final norm and head.
        dtype: the dtype the weights load in (`bfloat16`, `float16`, `float32`; default: the
            checkpoint's own, float32 for a model from `config`), with no float32 copy first.
        head_chunk: rows of logits computed at once when answering as a teacher.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if (path is None) == (config is None):
        raise ValueError("causal_lm: give exactly one of path (a pretrained model) and config (a model from a "
                         "transformers config, e.g. {model_type: gpt2, n_layer: 2, n_embd: 128, n_head: 2})")
    tok = load_tokenizer(tokenizer)
    specials = {name: getattr(tok, f"{name}_token_id", None) for name in ("bos", "eos", "pad")}
    torch_dtype = _dtype(dtype)
    if config is not None:
        spec = dict(config)
        model_type = spec.pop("model_type", None)
        if not model_type:
            raise ValueError("causal_lm config: model_type is required (e.g. gpt2, llama, qwen2)")
        ids = {"vocab_size": len(tok), "pad_token_id": specials["pad"], "bos_token_id": specials["bos"],
               "eos_token_id": specials["eos"]}
        model_config = AutoConfig.for_model(model_type, **{**ids, **spec})
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch_dtype or torch.float32)
        version = "random-init"
    else:
        folder = resolve_model_dir(path)
        model_config = AutoConfig.from_pretrained(folder)
        model = (AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch_dtype or "auto")
                 if pretrained
                 else AutoModelForCausalLM.from_config(model_config, dtype=torch_dtype or torch.float32))
        version = checkpoint_version(folder) if pretrained else "random-init"
    if layers is not None:
        _keep_layers(model, layers, path or "config")
        version += f"-layers{'-'.join(map(str, layers))}"
    width = model.get_output_embeddings().out_features
    if width < len(tok):
        raise ValueError(f"causal_lm: the model predicts {width} token ids, its tokenizer has {len(tok)}")
    positions = _positions(model_config)
    if positions is not None and in_features > positions:
        raise ValueError(f"causal_lm: sequences of {in_features} tokens exceed the model's {positions} positions "
                         f"(data.sequence_length)")
    lm = CausalLM(model, tokenizer_hash(tok), version, len(tok), specials, head_chunk)
    lm.positions = positions
    return lm


def _dtype(name: Optional[str]) -> Optional[torch.dtype]:
    if name is None:
        return None
    if name not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"causal_lm dtype: {name!r} is not one of bfloat16, float16, float32")
    return getattr(torch, name)


def _keep_layers(model: nn.Module, layers: list[int], path: str) -> None:
    """Keep `layers` of the model's decoder layers, in this order (renumbered for its cache)."""
    blocks = getattr(model.base_model, "layers", None) or getattr(model.base_model, "h", None)
    if blocks is None:
        raise ValueError(f"causal_lm {path!r}: layers needs a decoder with a `layers` (or `h`) list; "
                         f"{type(model.base_model).__name__} has none")
    if not layers or any(not 0 <= i < len(blocks) for i in layers):
        raise ValueError(f"causal_lm {path!r}: layers {layers} must index its {len(blocks)} decoder layers")
    kept = nn.ModuleList([blocks[i] for i in layers])
    for new, block in enumerate(kept):
        for sub in block.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new
    setattr(model.base_model, "layers" if hasattr(model.base_model, "layers") else "h", kept)
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    for name in ("num_hidden_layers", "n_layer"):
        if hasattr(config, name):
            setattr(config, name, len(layers))
