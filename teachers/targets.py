"""A batch's validated soft-target records, one a teacher, with the teachers' static weights
(renormalised over the teachers that answered). The students merge them into what their loss
terms read (`students.teacher_merge`); nothing here makes a tensor."""

from __future__ import annotations

from dataclasses import dataclass

from teachers.soft_targets import SoftTargets


@dataclass
class TeacherTargets:
    """The teachers' records for one batch and the (normalised) weight of each."""

    records: dict[str, SoftTargets]
    weights: dict[str, float]

    def __post_init__(self) -> None:
        total = sum(self.weights[name] for name in self.records)
        if total <= 0:
            raise ValueError(f"teacher weights {self.weights} sum to {total}; at least one must be > 0")
        self.weights = {name: self.weights[name] / total for name in self.records}

    @property
    def names(self) -> list[str]:
        return list(self.records)

    @property
    def all_sparse(self) -> bool:
        """Every record is top-k or sampled (the loss can then run without a dense teacher tensor)."""
        return all(not rec.is_dense for rec in self.records.values())
