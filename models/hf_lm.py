"""Hugging Face causal language models as teachers and students (`models.hf_lm:causal_lm`).

A model comes from a folder in Hugging Face layout, `pkg:<package>/<folder>`, a hub id on a
cluster with internet access (safetensors only, no remote code), or is built from a
`config` mapping (`{model_type: gpt2, n_layer: 2, ...}`) with random weights: what tests and
the CPU configs use, and what a teacher trained by Distillery starts from.

The module maps token sequences [B, L] to the logits of their *target positions* [N, V]
(`ingest.token_targets`): the transformer runs over the whole sequence, the LM head only over
the N positions that are taught, so padding and prompt rows are never computed. Teachers run
the head in chunks of `head_chunk` rows, so a long sequence never holds [L, V] logits at once.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import nn

from ingest import (TokenSpecials, load_tokenizer, resolve_model_dir, specials_of, target_mask, targets_per_sequence,
                    tokenizer_hash)


class CausalLM(nn.Module):
    output_kind = "tokens"

    def __init__(self, lm: nn.Module, specials: TokenSpecials, tokenizer_hash: str, model_version: str,
                 vocab_size: int, head_chunk: int = 4096):
        super().__init__()
        self.lm = lm
        self.specials = specials
        self.tokenizer_hash = tokenizer_hash
        self.model_version = model_version
        self.vocab_size = vocab_size  # the tokenizer's; a model's padded vocabulary is cut to it
        self.head_chunk = head_chunk

    def _check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {int(ids.min())}..{int(ids.max())}; "
                             f"tokenize with the model's own tokenizer (data.tokenizer)")
        return ids

    def target_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """[N, d]: the last hidden state at every target position, row-major."""
        ids = self._check_ids(ids)
        attention = (ids != self.specials.pad).long()
        hidden = self.lm.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
        return hidden[:, :-1][target_mask(ids, self.specials)]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, d] -> [n, V] logits over the tokenizer's vocabulary."""
        return self.lm.get_output_embeddings()(hidden)[:, :self.vocab_size]

    def head_chunks(self, hidden: torch.Tensor) -> Iterator[torch.Tensor]:
        """The logits of `hidden`'s rows, `head_chunk` rows at a time."""
        for start in range(0, len(hidden), self.head_chunk):
            yield self.head(hidden[start:start + self.head_chunk])

    @property
    def layout_tokens(self) -> tuple[int, ...]:
        """Token ids that only lay out sequences (padding, begin, separator): never generated."""
        return tuple(sorted({self.specials.pad, self.specials.sep, getattr(self, "bos", self.specials.pad)}))

    def position_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L, V]: the next-token logits at every position (the teacher's scoring call)."""
        ids = self._check_ids(ids)
        out = self.lm(input_ids=ids, attention_mask=(ids != self.specials.pad).long())
        return out.logits[..., :self.vocab_size]

    def targets_per_sequence(self, ids: torch.Tensor) -> torch.Tensor:
        return targets_per_sequence(ids.long(), self.specials)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.target_hidden(input_ids))

    @torch.no_grad()
    def generate(self, prompts: torch.Tensor, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int = 0, eos: Optional[int] = None) -> torch.Tensor:
        """Sample completions of right-padded prompts `<bos> prompt <sep> <pad>...` [B, L]:
        int64 [B, max_new_tokens], padded after the end token (and after the model's last
        position, where the context is full). temperature 0 decodes greedily."""
        prompts = self._check_ids(prompts)
        lengths = (prompts != self.specials.pad).sum(1)
        width = int(lengths.max())
        left = torch.full((len(prompts), width), self.specials.pad, dtype=torch.long, device=prompts.device)
        for row, n in enumerate(lengths.tolist()):  # batched decoding continues every row at its end
            left[row, width - n:] = prompts[row, :n]
        room = max_new_tokens if self.positions is None else min(max_new_tokens, self.positions - width)
        completion = torch.full((len(prompts), max_new_tokens), self.specials.pad, dtype=torch.long)
        if room <= 0:  # the prompts fill the model's context: nothing to add
            return completion
        sampling = {"do_sample": False} if temperature == 0 else {
            "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None}
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            out = self.lm.generate(input_ids=left, attention_mask=(left != self.specials.pad).long(),
                                   max_new_tokens=room, pad_token_id=self.specials.pad, eos_token_id=eos,
                                   suppress_tokens=list(self.layout_tokens), **sampling)
        finally:
            torch.random.set_rng_state(generator_state)
        new = out[:, width:].cpu()
        completion[:, :new.shape[1]] = new
        return completion


def _positions(config: Any) -> Optional[int]:
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def causal_lm(in_features: int, num_classes: int, tokenizer: str, path: Optional[str] = None,
              config: Optional[dict[str, Any]] = None, pretrained: bool = True, head_chunk: int = 4096) -> CausalLM:
    """Factory: a causal language model over the run's token sequences.

    Args:
        in_features: the dataset's sequence length (checked against the model's positions).
        num_classes: the run's vocabulary size (unused: the model predicts its own tokenizer's
            ids, and a teacher whose tokenizer is not the run's is refused when it is added).
        tokenizer: the model's tokenizer (folder, `pkg:` folder or hub id); its vocabulary size
            and hash are what `teacher add` compares with the run's `data.tokenizer`.
        path: a pretrained model (folder, `pkg:` folder or hub id); or
        config: a transformers config mapping with `model_type`, for a model with random
            weights (vocab_size and the special token ids default to the tokenizer's).
        pretrained: with `path`, load its weights; False builds it from its config only.
        head_chunk: rows of logits computed at once when answering as a teacher.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if (path is None) == (config is None):
        raise ValueError("causal_lm: give exactly one of path (a pretrained model) and config (a model from a "
                         "transformers config, e.g. {model_type: gpt2, n_layer: 2, n_embd: 128, n_head: 2})")
    tok = load_tokenizer(tokenizer)
    specials = specials_of(tok, f"causal_lm tokenizer {tokenizer!r}")
    if config is not None:
        spec = dict(config)
        model_type = spec.pop("model_type", None)
        if not model_type:
            raise ValueError("causal_lm config: model_type is required (e.g. gpt2, llama, qwen2)")
        ids = {"vocab_size": len(tok), "pad_token_id": specials.pad, "bos_token_id": tok.bos_token_id,
               "eos_token_id": tok.eos_token_id}
        model_config = AutoConfig.for_model(model_type, **{**ids, **spec})
        model = AutoModelForCausalLM.from_config(model_config)
        version = "random-init"
    else:
        folder = resolve_model_dir(path)
        model_config = AutoConfig.from_pretrained(folder)
        model = (AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True) if pretrained
                 else AutoModelForCausalLM.from_config(model_config))
        from models.hf import _weights_version

        version = _weights_version(folder) if pretrained else "random-init"
    width = model.get_output_embeddings().out_features
    if width < len(tok):
        raise ValueError(f"causal_lm: the model predicts {width} token ids, its tokenizer has {len(tok)}")
    positions = _positions(model_config)
    if positions is not None and in_features > positions:
        raise ValueError(f"causal_lm: sequences of {in_features} tokens exceed the model's {positions} positions "
                         f"(data.sequence_length)")
    lm = CausalLM(model, specials, tokenizer_hash(tok), version, len(tok), head_chunk)
    lm.eos, lm.bos, lm.positions = int(tok.eos_token_id), int(tok.bos_token_id), positions
    return lm
