"""Speculative KD with a student on the GPU: the batch's prompts (CPU tensors from the data)
reach the student's `generate` on its device (skipped without CUDA)."""

import numpy as np
import pytest
import torch

from ingest.batches import Batch
from ingest.lm_data import DEFAULT_TOKENIZER
from models.hf_lm import causal_lm
from students.speculative_batches import SpeculativeBatches

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
LENGTH = 24
TINY = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": LENGTH}


def test_a_cuda_student_completes_cpu_prompts():
    student = causal_lm(LENGTH, 1024, DEFAULT_TOKENIZER, config=TINY).cuda()
    specials = student.specials
    prompts = np.full((3, LENGTH), specials.pad, dtype=np.int64)
    prompts[:, :4] = [1, 40, 41, specials.sep]  # <bos> (id 1 in the shipped tokenizer), a prompt, <sep>

    def accept_all(candidate: torch.Tensor, starts: torch.Tensor):
        return torch.full((len(candidate),), -1), torch.zeros(len(candidate), dtype=torch.long)

    batches = SpeculativeBatches(student, accept_all, top_k=5, max_rounds=2, temperature=1.0, seed=0, rank=0)
    out = batches(Batch("b", 0, 0, prompts, np.zeros((3, LENGTH)), np.arange(3), prompts, {}), step=0)
    assert out.x.shape == (3, LENGTH) and (out.x[:, 4] != specials.pad).all()
