"""Speculative KD: interleaving student proposals with teacher replacements, and the teacher's
verdict on proposed tokens (plain torch, no Ray), on packed sequences (`ingest.token_layout`)."""

import numpy as np
import torch

from ingest.token_layout import CONTEXT, TARGET, pack, padded, token_ids, token_roles
from students.speculative_batches import interleave
from teachers.speculative_scoring import teacher_verdict

BOS, EOS = 1, 3


def _packed(context: list[int], target: list[int], length: int) -> torch.Tensor:
    return torch.from_numpy(padded([np.concatenate([pack(context, CONTEXT), pack(target, TARGET)])], length))


def test_proposals_are_kept_up_to_the_first_rejection_which_the_teacher_replaces():
    """The student always proposes 10, 11, 12, ...; the teacher rejects every token >= 12 and
    puts 50 in its place, then accepts everything after its replacement up to the end token."""
    prompts = _packed([BOS, 5, 6], [99, 98], 10)  # the data's own completion is not used
    calls = []

    def propose(prefixes, new):
        end = int((prefixes[0] != 0).sum())
        if int(token_ids(prefixes[0, end - 1])) == 50:  # after the replacement the student ends the text
            return torch.tensor([[20, EOS] + [0] * (new - 2)]), torch.tensor([2])
        return torch.arange(10, 10 + new)[None], torch.tensor([new])

    def verify(sequences, start):
        calls.append((sequences.clone(), start.clone()))
        row = token_ids(sequences[0])
        bad = [j for j in range(int(start[0]), len(row)) if sequences[0, j] != 0 and 12 <= int(row[j]) < 20]
        return torch.tensor([bad[0] if bad else -1]), torch.tensor([50])

    out = interleave(prompts, propose, verify, eos=EOS, max_rounds=8)
    assert token_ids(out.sequences[0]).tolist() == [BOS, 5, 6, 10, 11, 50, 20, EOS, 0, 0]
    assert token_roles(out.sequences[0]).tolist() == [CONTEXT] * 3 + [TARGET] * 5 + [0, 0]
    assert (out.rounds, out.replaced) == (2, 1)
    assert out.proposed == 3 + 2 and out.accepted == 2 + 2  # 10 11 (12 rejected), then 20 <eos>
    assert calls[0][1].tolist() == [3]


def test_rounds_are_bounded():
    prompts = _packed([BOS, 7], [8], 10)
    out = interleave(prompts, lambda p, n: (torch.full((len(p), n), 9), torch.full((len(p),), n)),
                     lambda s, st: (st.clone(), torch.full_like(st, 4)), eos=EOS, max_rounds=3)
    assert out.rounds == 3 and token_ids(out.sequences[0, 2:5]).tolist() == [4, 4, 4] and out.accepted == 0


def test_teacher_rejects_tokens_outside_its_top_k_and_samples_a_replacement():
    vocab = 8
    logits = torch.full((1, 6, vocab), -10.0)
    logits[0, :, 4] = 5.0  # the teacher always expects token 4 next ...
    logits[0, :, 5] = 4.0  # ... or 5
    sequences = _packed([BOS, 2], [4, 5, 7, 4], 6)  # proposals from position 2: 4 5 are fine, 7 is not
    first, replacement = teacher_verdict(logits, sequences, torch.tensor([2]), top_k=2, temperature=1.0,
                                         generator=torch.Generator().manual_seed(0), never=(BOS,))
    assert first.tolist() == [4] and int(replacement[0]) in (4, 5)
    first, _ = teacher_verdict(logits, _packed([BOS, 2], [4, 5], 6), torch.tensor([2]), top_k=2,
                               temperature=0, generator=torch.Generator())
    assert first.tolist() == [-1]  # padding is never judged
    logits[0, :, BOS] = 50.0  # even a teacher that loves its begin token never writes it
    _, replacement = teacher_verdict(logits, sequences, torch.tensor([2]), top_k=2, temperature=0,
                                     generator=torch.Generator(), never=(BOS,))
    assert int(replacement[0]) == 4
