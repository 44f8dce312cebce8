"""The layout of a language model's token sequences: one int64 array that carries each
token's id and its role (plain numpy, or torch for a tensor).

A sequence is the model's own format (`ingest.lm_sequences`): its tokenizer's bos/eos
conventions, or its chat template, and no separator. Each entry packs a token id (the low 32
bits) with its role (the bits above): `PAD` (not part of the sequence: never attended to,
never taught), `CONTEXT` (an input only: a prompt, a system or user turn) or `TARGET` (a token
the model is taught to predict: a completion, an assistant turn with its end-of-turn token).
Position t, which predicts token t + 1, is a *target position* when token t + 1 is a `TARGET`.

The roles so travel with the ids wherever a batch goes (Serve, gRPC, the offline store, Ray
Data streams, checkpoints) and nobody compares ids with a pad or separator id: padding is
the entries whose role is `PAD` (they are all zero), the attention mask is `role != PAD`.
Soft-target records hold one row per target position, in row-major order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

PAD, CONTEXT, TARGET = 0, 1, 2
ROLE_SHIFT = 32
TOKEN_MASK = (1 << ROLE_SHIFT) - 1

Ids = TypeVar("Ids", "torch.Tensor", np.ndarray)


def _int64(x: Ids) -> Ids:
    return x.astype(np.int64, copy=False) if isinstance(x, np.ndarray) else x.long()


def token_ids(x: Ids) -> Ids:
    """The token ids of packed sequences (padding reads as id 0: masked out by `attention_mask`)."""
    return _int64(x) & TOKEN_MASK


def token_roles(x: Ids) -> Ids:
    """`PAD`, `CONTEXT` or `TARGET` at every entry."""
    return _int64(x) >> ROLE_SHIFT


def attention_mask(x: Ids) -> Ids:
    """bool [B, L]: the entries that are part of their sequence."""
    return token_roles(x) != PAD


def target_mask(x: Ids) -> Ids:
    """bool [B, L - 1]: whether position t (predicting token t + 1) is a target position."""
    return token_roles(x)[:, 1:] == TARGET


def target_labels(x: Ids) -> Ids:
    """int64 [N]: the next token at every target position, row-major."""
    return token_ids(x)[:, 1:][target_mask(x)]


def targets_per_sequence(x: Ids) -> Ids:
    """int64 [B]: how many target positions (record rows) each sequence has."""
    return target_mask(x).sum(1)


def sequence_lengths(x: Ids) -> Ids:
    """int64 [B]: the entries of each sequence (sequences are right-padded)."""
    return attention_mask(x).sum(1)


def prompt_lengths(x: Ids) -> Ids:
    """int64 [B]: the tokens before each sequence's first target (what generation starts from);
    a sequence without a target is all prompt."""
    is_target = token_roles(x) == TARGET
    first = is_target.argmax(1) if isinstance(x, np.ndarray) else is_target.int().argmax(1)
    found = is_target.any(1)
    return first * found + sequence_lengths(x) * ~found


def with_role(ids: Ids, role: int) -> Ids:
    """Plain token ids (an array or a tensor, e.g. what a model generated) packed with `role`."""
    return _int64(ids) | (role << ROLE_SHIFT)


def pack(tokens: Sequence[int], roles: Sequence[int] | int) -> np.ndarray:
    """int64 [len(tokens)]: `tokens` with their roles (one role for all, or one each)."""
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > TOKEN_MASK):
        raise ValueError(f"token ids must lie in [0, 2^{ROLE_SHIFT}); got {int(ids.min())}..{int(ids.max())}")
    return ids | (np.broadcast_to(np.asarray(roles, dtype=np.int64), ids.shape) << ROLE_SHIFT)


def padded(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """int64 [N, length]: packed rows cut to `length` and right-padded."""
    out = np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        out[i, :min(length, len(row))] = row[:length]
    return out

