"""Which positions of a token sequence a causal language model is taught at (plain torch).

A sequence is `<bos> prompt <sep> completion <eos> <pad>...`. Position t predicts token t + 1;
it is a *target position* when token t + 1 is neither padding nor part of the prompt (it comes
after the sequence's separator). A sequence without a separator is all completion (plain
language modelling). Teachers and students derive the same positions from the token ids alone,
so soft-target records hold one row per target position, in row-major order, and no mask ever
travels: padding is never computed or sent, and prompt tokens are inputs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TokenSpecials:
    """The special token ids a tokenizer gives the sequence layout."""

    pad: int
    sep: int


def specials_of(tokenizer, where: str = "data.tokenizer") -> TokenSpecials:
    """The pad and separator ids of a Hugging Face tokenizer; without pad, bos, sep and eos
    tokens it cannot lay out prompt/completion sequences."""
    ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "bos", "sep", "eos")}
    if None in ids.values():
        raise ValueError(f"{where}: the tokenizer needs pad, bos, sep and eos tokens for prompt/completion "
                         f"sequences; it has {ids} (set the missing ones in its tokenizer_config.json)")
    return TokenSpecials(pad=int(ids["pad"]), sep=int(ids["sep"]))


def target_mask(ids: torch.Tensor | np.ndarray, specials: TokenSpecials) -> torch.Tensor | np.ndarray:
    """bool [B, L - 1]: whether position t (predicting token t + 1) is a target position (a
    tensor for a tensor, an array for an array: the data layer never needs torch)."""
    if isinstance(ids, np.ndarray):
        ids = ids.astype(np.int64, copy=False)
        is_sep = ids == specials.sep
        seen_sep, prompted = np.cumsum(is_sep, axis=1) > 0, is_sep.any(axis=1, keepdims=True)
    else:
        ids = ids.long()
        is_sep = ids == specials.sep
        seen_sep, prompted = is_sep.cumsum(1) > 0, is_sep.any(1, keepdim=True)  # a separator at or before t
    return (ids[:, 1:] != specials.pad) & (seen_sep[:, :-1] | ~prompted)


def target_labels(ids: torch.Tensor | np.ndarray, specials: TokenSpecials) -> torch.Tensor | np.ndarray:
    """int64 [N]: the next token at every target position, row-major (numpy in, numpy out)."""
    if isinstance(ids, np.ndarray):
        ids = ids.astype(np.int64, copy=False)
    else:
        ids = ids.long()
    return ids[:, 1:][target_mask(ids, specials)]


def targets_per_sequence(ids: torch.Tensor, specials: TokenSpecials) -> torch.Tensor:
    """int64 [B]: how many target positions (record rows) each sequence has."""
    return target_mask(ids, specials).sum(1)
