"""The teacher's side of speculative KD (`students.speculative_batches`), plain torch: which proposed
tokens a teacher rejects, and what it puts in their place."""

from __future__ import annotations

import torch


def teacher_verdict(logits: torch.Tensor, sequences: torch.Tensor, start: torch.Tensor, *, top_k: int,
                    temperature: float, generator: torch.Generator,
                    never: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's scoring of proposed tokens, from its logits at every position [B, L, V]
    of packed `sequences` (`ingest.token_layout`): the first position j >= start whose token is
    outside the top-K of the prediction made at j - 1 (-1 when all are inside, up to the
    padding), and a replacement sampled from the teacher's temperature-scaled distribution at
    that position (its argmax at temperature 0), never one of the tokens `never` (a bos)."""
    from ingest import attention_mask, token_ids

    present, sequences = attention_mask(sequences), token_ids(sequences)
    batch, length = sequences.shape
    positions = torch.arange(1, length, device=sequences.device)
    top = logits[:, :-1].topk(min(top_k, logits.shape[-1]), dim=-1).indices            # [B, L-1, K]
    inside = (top == sequences[:, 1:, None]).any(-1)                                   # [B, L-1]
    proposed = (positions[None, :] >= start[:, None]) & present[:, 1:]
    rejected = proposed & ~inside
    first = torch.where(rejected.any(1), rejected.int().argmax(1) + 1, torch.full_like(start, -1))
    replacement = torch.zeros_like(start)
    for row in torch.nonzero(first >= 0).flatten().tolist():
        scores = logits[row, first[row] - 1].float().clone()
        if never:
            scores[list(never)] = -float("inf")
        if temperature == 0:
            replacement[row] = scores.argmax()
        else:
            probs = torch.softmax(scores / temperature, -1)
            replacement[row] = torch.multinomial(probs, 1, generator=generator)[0]
    return first, replacement
