"""Distillation losses: weighted sums of the named terms in `students.kd_terms` (plain torch).

`CompositeLoss` is what the train loop minimizes; `distill.terms` in the config lists its terms.
The presets `hinton_kd` and `logit_mse` (`distill.loss` with `distill.alpha`) are the two-term
sums alpha * CE + (1 - alpha) * {KD, logit MSE}; `ce` is the no-KD baseline.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from cluster import Registry
from students.config import PRESET_TERMS
from students.discriminator import Adversary
from students.kd_terms import TERMS, TermInputs, fuse_row_terms
from students.sparse_kd import SPARSE_TERMS
from students.teacher_merge import merge_targets
from students.weighting import Weighting
from teachers import TeacherTargets

LossFn = Callable[..., dict[str, torch.Tensor]]
LOSSES: Registry[LossFn] = Registry("loss")
NEEDS_NO_TEACHER = {"ce", "byot"}  # terms computed from the student alone


@dataclass(frozen=True)
class Term:
    name: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


def preset_terms(loss: str, alpha: float) -> list[Term]:
    """The terms of a named preset loss."""
    if loss == "ce":
        return [Term("ce")]
    if loss in PRESET_TERMS:
        hard, soft = PRESET_TERMS[loss]
        return [Term(hard, alpha), Term(soft, 1 - alpha)]
    raise KeyError(f"unknown loss {loss!r}; known: ce, hinton_kd, logit_mse (or list distill.terms)")


def needs_teacher(terms: list[Term]) -> bool:
    """Whether any term reads soft targets (BYOT and cross-entropy alone do not)."""
    return any(t.name not in NEEDS_NO_TEACHER for t in terms)


def distill_terms(distill: Any) -> list[Term]:
    """The KD student's terms from a `DistillConfig`: `terms` if listed, else the `loss` preset."""
    if distill.terms:
        return [Term(t.name, t.weight, dict(t.params)) for t in distill.terms]
    return preset_terms(distill.loss, distill.alpha)


def method_terms(distill: Any) -> dict[str, list[Term]]:
    """Every KD method of the run by name ("" for the single method of `terms`/`loss`)."""
    if distill.methods:
        return {name: [Term(t.name, t.weight, dict(t.params)) for t in method.terms]
                for name, method in distill.methods.items()}
    return {"": distill_terms(distill)}


def check_terms(terms: list[Term], where: str = "distill.terms") -> None:
    """Refuse unknown term names and parameters before anything runs."""
    for i, term in enumerate(terms):
        try:
            fn = TERMS.get(term.name)
        except KeyError as exc:
            raise ValueError(f"{where}[{i}].name: {exc.args[0]}") from None
        accepted = list(inspect.signature(fn).parameters)[1:]
        unknown = sorted(set(term.params) - set(accepted))
        if unknown:
            raise ValueError(f"{where}[{i}] ({term.name}): unknown params {unknown}; it takes {accepted}")


def teacher_feature_layers(distill: Any, teacher: str) -> list[str]:
    """The layers of `teacher` whose features any KD method of the run reads."""
    return sorted({layer for terms in method_terms(distill).values()
                   for layer in feature_refs(terms)[1].get(teacher, set())})


def feature_refs(terms: list[Term]) -> tuple[set[str], dict[str, set[str]]]:
    """(student layers, {teacher: layers}) the terms read; teacher features are named '<teacher>/<layer>'."""
    student, teacher = set(), {}
    for term in terms:
        for param in ("student", "exits", "deepest"):  # byot reads its exits and deepest layer
            student.update(_names(term.params.get(param)))
        for ref in _names(term.params.get("teacher")):
            name, _, layer = ref.partition("/")
            if not layer:
                raise ValueError(f"distill.terms ({term.name}): teacher feature {ref!r} must be "
                                 f"'<teacher>/<layer>', e.g. 'cnn/body.1'")
            teacher.setdefault(name, set()).add(layer)
    return student, teacher


def self_distillation_exits(terms: list[Term]) -> tuple[list[str], list[tuple[str, str]]]:
    """(exit layers, (exit, deepest) hint pairs) of the terms' `byot` entries, checked."""
    exits: list[str] = []
    hints: list[tuple[str, str]] = []
    for term in terms:
        if term.name != "byot":
            continue
        layers = _names(term.params.get("exits"))
        if not layers:
            raise ValueError("distill.terms (byot): params.exits must name at least one student layer, "
                             "e.g. exits: [features.2]")
        deepest = term.params.get("deepest")
        if term.params.get("feature_weight") and not deepest:
            raise ValueError("distill.terms (byot): feature_weight > 0 needs params.deepest, the student layer "
                             "whose feature the exits are hinted towards")
        exits += [layer for layer in layers if layer not in exits]
        if term.params.get("feature_weight"):
            hints += [(layer, str(deepest)) for layer in layers if (layer, str(deepest)) not in hints]
    return exits, hints


def _names(value: Any) -> list[str]:
    """A feature param: one name or a list of names (the minilm term names three)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


class CompositeLoss:
    """sum_i w_i * term_i. For a batch without teachers, the terms that need none are used; when
    that drops terms, their weights are renormalized to sum to one (Hinton KD becomes plain
    cross-entropy). Several teachers merge by `weighting` (students.weighting, merged in students.teacher_merge); the output
    holds each teacher's mean weight over the batch as `teacher_weight/<name>` (not summed)
    and, for a learned gate, its loss as `gate` (summed with `gate_loss_weight`)."""

    def __init__(self, terms: list[Term], temperature: float, weighting: Optional[Weighting] = None,
                 num_classes: int = 0, device: Any = "cpu", seed: int = 0):
        check_terms(terms)
        self.terms = terms
        self.temperature = temperature
        self.weighting = weighting or Weighting()
        self.needs_logits = any(t.name == "logit_mse" for t in terms)
        # top-k and sampled records go to these terms without a dense [B, V] teacher tensor (students.sparse_kd)
        self.sparse = all(t.name in SPARSE_TERMS or t.name in NEEDS_NO_TEACHER for t in terms)
        adversarial = [t for t in terms if t.name == "adversarial"]
        self.adversary = None
        if adversarial:
            if num_classes < 2:
                raise ValueError("distill.terms (adversarial): the discriminator needs the output width; "
                                 "pass num_classes to CompositeLoss")
            self.adversary = Adversary(num_classes, device=device, seed=seed, **adversarial[0].params)

    def __call__(self, student_logits: torch.Tensor, labels: torch.Tensor, targets: Optional[TeacherTargets],
                 student_features: Optional[dict[str, torch.Tensor]] = None,
                 projectors: Optional[torch.nn.ModuleDict] = None, gate_logits: Optional[torch.Tensor] = None,
                 columns: Optional[dict[str, Any]] = None) -> dict[str, torch.Tensor]:
        device = student_logits.device
        inputs = TermInputs(student_logits, labels, self.temperature, student_features=student_features or {},
                            projectors=projectors,
                            discriminator=self.adversary.discriminator if self.adversary else None)
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=device)
        if targets is not None:
            merged = merge_targets(self.weighting, targets, labels, device, temperature=self.temperature, sparse=self.sparse,
                                   needs_logits=self.needs_logits, gate_logits=gate_logits, columns=columns)
            inputs.teacher_sparse, inputs.teacher_logprob = merged.sparse, merged.logprob
            inputs.teacher_logits, inputs.centred_logits = merged.logits, merged.centred_logits
            inputs.teacher_features = merged.features
            out.update({f"teacher_weight/{n}": w for n, w in merged.mean_weights.items()})
            if merged.gate_loss is not None:
                out["gate"] = merged.gate_loss
                total = total + self.weighting.gate_loss_weight * merged.gate_loss
            if self.adversary is not None and merged.logprob is not None:  # not in total: `step_discriminator`
                out["discriminator"] = self.adversary.loss(inputs.student_logprob(), merged.logprob)
        terms = [t for t in self.terms if targets is not None or t.name in NEEDS_NO_TEACHER]
        scale = 1.0
        if len(terms) < len(self.terms):
            weight = sum(t.weight for t in terms)
            scale = 1.0 / weight if weight > 0 else 1.0
        fuse_row_terms(inputs, [(t.name, t.params) for t in terms])
        for term in terms:
            value = TERMS.get(term.name)(inputs, **term.params)
            out[term.name] = value
            total = total + term.weight * scale * value
        out["total"] = total
        return out

    def step_discriminator(self, out: dict[str, torch.Tensor]) -> None:
        """Adversarial distillation: the discriminator's step on this batch's loss, after the student's."""
        if self.adversary is not None and "discriminator" in out:
            self.adversary.step(out["discriminator"])


def _preset(loss: str) -> LossFn:
    def fn(student_logits: torch.Tensor, labels: torch.Tensor, targets: Optional[TeacherTargets] = None, *,
           alpha: float = 0.5, temperature: float = 1.0) -> dict[str, torch.Tensor]:
        return CompositeLoss(preset_terms(loss, alpha), temperature)(student_logits, labels, targets)
    fn.__doc__ = f"The '{loss}' preset of `CompositeLoss`."
    return fn


cross_entropy = LOSSES.register("ce")(_preset("ce"))
hinton_kd = LOSSES.register("hinton_kd")(_preset("hinton_kd"))
logit_mse = LOSSES.register("logit_mse")(_preset("logit_mse"))
