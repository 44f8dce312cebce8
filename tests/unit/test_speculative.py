"""Speculative KD: interleaving student proposals with teacher replacements, and the teacher's
verdict on proposed tokens (plain torch, no Ray)."""

import torch

from students.speculative_batches import interleave, prompt_lengths
from teachers.speculative_scoring import teacher_verdict

PAD, BOS, SEP, EOS = 0, 1, 2, 3


def test_prompt_lengths_count_through_the_separator():
    ids = torch.tensor([[BOS, 7, SEP, 9, PAD], [BOS, 7, 8, 9, 10]])
    assert prompt_lengths(ids, SEP).tolist() == [3, 0]


def test_proposals_are_kept_up_to_the_first_rejection_which_the_teacher_replaces():
    """The student always proposes 10, 11, 12, ...; the teacher rejects every token >= 12 and
    puts 50 in its place, then accepts everything after its replacement up to the end token."""
    prompts = torch.tensor([[BOS, 5, SEP, PAD, PAD, PAD, PAD, PAD, PAD, PAD]])
    calls = []

    def propose(prefixes, new):
        end = int((prefixes[0] != PAD).sum())
        if int(prefixes[0, end - 1]) == 50:  # after the replacement the student ends the text
            return torch.tensor([[20, EOS] + [PAD] * (new - 2)])
        return torch.arange(10, 10 + new)[None]

    def verify(sequences, start):
        calls.append((sequences.clone(), start.clone()))
        row = sequences[0]
        bad = [j for j in range(int(start[0]), len(row)) if int(row[j]) != PAD and 12 <= int(row[j]) < 20]
        return torch.tensor([bad[0] if bad else -1]), torch.tensor([50])

    out = interleave(prompts, propose, verify, pad=PAD, eos=EOS, sep=SEP, max_rounds=8)
    assert out.sequences[0].tolist() == [BOS, 5, SEP, 10, 11, 50, 20, EOS, PAD, PAD]
    assert (out.rounds, out.replaced) == (2, 1)
    assert out.proposed == 3 + 2 and out.accepted == 2 + 2  # 10 11 (12 rejected), then 20 <eos>
    assert calls[0][1].tolist() == [3]


def test_rounds_are_bounded():
    prompts = torch.tensor([[BOS, SEP] + [PAD] * 8])
    out = interleave(prompts, lambda p, n: torch.full((len(p), n), 9), lambda s, st: (st.clone(), torch.full_like(st, 4)),
                     pad=PAD, eos=EOS, sep=SEP, max_rounds=3)
    assert out.rounds == 3 and out.sequences[0, 2:5].tolist() == [4, 4, 4] and out.accepted == 0


def test_teacher_rejects_tokens_outside_its_top_k_and_samples_a_replacement():
    vocab = 8
    logits = torch.full((1, 6, vocab), -10.0)
    logits[0, :, 4] = 5.0  # the teacher always expects token 4 next ...
    logits[0, :, 5] = 4.0  # ... or 5
    sequences = torch.tensor([[BOS, SEP, 4, 5, 7, 4]])  # proposals from position 2: 4 5 are fine, 7 is not
    first, replacement = teacher_verdict(logits, sequences, torch.tensor([2]), top_k=2, temperature=1.0, pad=PAD,
                                         generator=torch.Generator().manual_seed(0), never=(PAD, BOS, SEP))
    assert first.tolist() == [4] and int(replacement[0]) in (4, 5)
    first, _ = teacher_verdict(logits, torch.tensor([[BOS, SEP, 4, 5, PAD, PAD]]), torch.tensor([2]), top_k=2,
                               temperature=0, pad=PAD, generator=torch.Generator())
    assert first.tolist() == [-1]  # padding is never judged
    logits[0, :, PAD] = 50.0  # even a teacher that loves the pad token never writes it
    _, replacement = teacher_verdict(logits, sequences, torch.tensor([2]), top_k=2, temperature=0, pad=PAD,
                                     generator=torch.Generator(), never=(PAD, BOS, SEP))
    assert int(replacement[0]) == 4
