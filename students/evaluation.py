"""Test metrics of a student (plain numpy): accuracy for classifiers; for sentence encoders,
how closely the student's embeddings agree with the teacher's on held-out text."""

from __future__ import annotations

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(-1) == labels).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x))
    return ranks


def embedding_agreement(student: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """test_cosine: mean cosine between each sample's student and teacher embedding.
    test_rank_agreement: Spearman correlation between the pairwise cosine similarities of all
    sample pairs under the student and under the teacher (does the student rank which texts
    are alike the way the teacher does?)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student embeddings {student.shape} and teacher embeddings {teacher.shape} differ")
    s, t = _unit(student), _unit(teacher)
    upper = np.triu_indices(len(s), k=1)
    rank_s, rank_t = _ranks((s @ s.T)[upper]), _ranks((t @ t.T)[upper])
    return {"test_cosine": float((s * t).sum(1).mean()),
            "test_rank_agreement": float(np.corrcoef(rank_s, rank_t)[0, 1])}
