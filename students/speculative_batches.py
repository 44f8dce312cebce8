"""Speculative KD (Xu et al., 2024, "Speculative Knowledge Distillation: Bridging the
Teacher-Student Gap Through Interleaved Sampling"), plain torch: the student proposes the
completion of each prompt; the teacher keeps the proposed tokens that lie in its top-K and
replaces the first one that does not with a token sampled from its own distribution; the
student then continues from there. The student trains with token-level KD on the interleaved
sequence, so it learns on its own (on-policy) text where the teacher agrees with it, and on
the teacher's where it does not.

Proposals go in blocks, as in speculative decoding: one student `generate` of the rest of the
completion, then one teacher scoring call for the whole block, accepting up to the first
rejection. `max_rounds` bounds the calls per batch; after the last round the rest of the
proposal is dropped at its first rejection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ingest import TARGET, Batch, prompt_lengths, target_labels, token_ids, with_role

# (packed sequences [B, L], start [B]) -> (first rejected position [B] (-1: none), replacement token [B])
Verify = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (packed prefixes [B, L] right-padded, new tokens) -> (proposed token ids [B, new], their lengths [B])
Propose = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Interleaved:
    sequences: torch.Tensor  # packed [B, L]: prompt, then accepted student tokens and teacher replacements
    proposed: int            # student tokens proposed
    accepted: int            # of them kept
    replaced: int            # teacher replacements
    rounds: int


def interleave(prompts: torch.Tensor, propose: Propose, verify: Verify, *, eos: Optional[int],
               max_rounds: int) -> Interleaved:
    """Build the interleaved sequences for the prompts of packed `prompts` (everything before
    each row's first target; `ingest.token_layout`), as long as `prompts` is wide."""
    batch, length = prompts.shape
    ends = prompt_lengths(prompts)
    seqs = torch.where(torch.arange(length)[None, :] < ends[:, None], prompts, torch.zeros_like(prompts))
    done = (ends == 0) | (ends >= length)
    proposed = accepted = replaced = rounds = 0
    while not bool(done.all()) and rounds < max_rounds:
        rounds += 1
        active = torch.nonzero(~done).flatten()
        room = int((length - ends[active]).max())
        block, sizes = propose(seqs[active], room)
        candidate = seqs[active].clone()
        placed = []
        for i, row in enumerate(active.tolist()):
            n = min(room, length - int(ends[row]), int(sizes[i]))
            candidate[i, ends[row]:ends[row] + n] = with_role(block[i, :n], TARGET)
            placed.append(n)
        first_rejected, replacement = verify(candidate, ends[active])
        for i, row in enumerate(active.tolist()):
            start, stop, rejected = int(ends[row]), placed[i], int(first_rejected[i])
            keep = stop if rejected < 0 else rejected - start
            seqs[row, start:start + keep] = candidate[i, start:start + keep]
            proposed += stop if rejected < 0 else keep + 1
            accepted += keep
            end = start + keep
            if rejected >= 0 and end < length:
                seqs[row, end] = with_role(replacement[i], TARGET)
                replaced += 1
                end += 1
            ends[row] = end
            last = int(token_ids(seqs[row, end - 1])) if end > start else None
            finished = end >= length or (eos is not None and last == eos) or rejected < 0
            if finished or rounds == max_rounds:
                done[row] = True
    return Interleaved(seqs, proposed, accepted, replaced, rounds)


class SpeculativeBatches:
    """Turns each training batch into its speculative-KD batch: the prompts of the batch,
    completed by the student and corrected by the teacher's scoring call (`verify`); the
    student's own completions in the data are not used."""

    def __init__(self, student: torch.nn.Module, verify: Verify, *, top_k: int, max_rounds: int, temperature: float,
                 seed: int, rank: int):
        self.student, self.verify = student, verify
        self.top_k, self.max_rounds, self.temperature = top_k, max_rounds, temperature
        self.seed, self.rank = seed, rank
        self.totals = {"proposed": 0, "accepted": 0, "replaced": 0, "rounds": 0, "batches": 0}

    def __call__(self, batch: Any, step: int) -> Any:
        model = self.student
        ids = torch.from_numpy(batch.x)
        was_training = model.training
        model.eval()
        try:
            def propose(prefixes: torch.Tensor, new: int) -> tuple[torch.Tensor, torch.Tensor]:
                seed = (self.seed * 1_000_003 + step) * 64 + self.rank
                device = next(model.parameters()).device  # the prompts come from the CPU batch
                return model.generate(prefixes.to(device), max_new_tokens=new, temperature=self.temperature, seed=seed)

            out = interleave(ids, propose, self.verify, eos=model.eos, max_rounds=self.max_rounds)
        finally:
            model.train(was_training)
        for key in ("proposed", "accepted", "replaced", "rounds"):
            self.totals[key] += getattr(out, key)
        self.totals["batches"] += 1
        x = out.sequences.numpy()
        return Batch(batch.batch_id.derive("skd"), batch.epoch, batch.index, x, target_labels(x),
                     batch.samples, x, batch.columns)

    def metrics(self) -> dict[str, float]:
        """`speculative/acceptance`: the share of proposed student tokens the teacher kept;
        `speculative/rounds`: scoring calls per batch."""
        t = self.totals
        return {"speculative/acceptance": t["accepted"] / max(t["proposed"], 1),
                "speculative/replaced_per_batch": t["replaced"] / max(t["batches"], 1),
                "speculative/rounds": t["rounds"] / max(t["batches"], 1)}
