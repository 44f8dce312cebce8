"""The KD method library: loss terms chosen by name in `distill.terms` and summed with weights.

Every term is plain torch and reads a `TermInputs`: the student's logits and named features,
the hard labels, and the teachers' merged soft targets (log-probabilities at temperature T,
with top-k records spread over their tail mass, see `teachers.targets`) and named features.
Each docstring gives the formula and the paper. Relation terms work over the samples of the
worker's own micro-batch: the relations they match are between samples a worker sees
together, so no all-gather is needed; with DeepSpeed data parallelism every worker matches
its own batch's relations and the gradients are averaged as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F

from cluster import Registry
from students.sparse_kd import (CHUNK_ELEMENTS, SPARSE_TERMS, SampledTargets, SparseTargets, chunked_cross_entropy,
                                chunked_terms, cross_entropy_term, row_term, sparse_term)

TermFn = Callable[..., torch.Tensor]
TERMS: Registry[TermFn] = Registry("distillation term")


@dataclass
class TermInputs:
    student_logits: torch.Tensor                   # [B, C]
    labels: torch.Tensor                           # [B]
    temperature: float
    teacher_logprob: Optional[torch.Tensor] = None  # [B, C], merged, at the temperature
    teacher_logits: Optional[torch.Tensor] = None   # [B, C], merged dense logits (logit matching)
    centred_logits: bool = False  # teacher_logits are centred per row (known up to a shift): centre the student's
    teacher_sparse: Optional[Union[SparseTargets, SampledTargets]] = None  # top-k or sampled records (sparse_kd)
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)  # "<teacher>/<layer>"
    projectors: Optional[torch.nn.ModuleDict] = None  # FitNets projectors and self-distillation exit heads
    discriminator: Optional[torch.nn.Module] = None   # adversarial distillation (students.discriminator)
    fused: dict[str, torch.Tensor] = field(default_factory=dict)  # terms computed together in row chunks

    def student_logprob(self, temperature: Optional[float] = None) -> torch.Tensor:
        return F.log_softmax(self.student_logits / (temperature or self.temperature), dim=-1)

    def need_teacher(self, term: str) -> torch.Tensor:
        if self.teacher_logprob is None:
            raise ValueError(f"distillation term {term!r} needs teacher soft targets")
        return self.teacher_logprob


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, from log-probabilities (0 * log 0 taken as 0)."""
    p = p_log.exp()
    return torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)


# --- response-based --------------------------------------------------------------------------

def fuse_row_terms(inputs: TermInputs, terms: list[tuple[str, dict[str, Any]]]) -> None:
    """Compute the terms that run in row chunks (`ce` over more than one chunk of logits, the
    KD terms from sparse targets) together, into `inputs.fused`, when there are several: one
    backward pass over the chunks and one gradient buffer for all of them."""
    big = inputs.student_logits.numel() > CHUNK_ELEMENTS
    rows = [(name, params) for name, params in terms
            if (name == "ce" and big) or (name in SPARSE_TERMS and inputs.teacher_sparse is not None)]
    if len(rows) < 2 or len({name for name, _ in rows}) < len(rows):
        return
    logits = inputs.student_logits
    parts = [cross_entropy_term(logits, inputs.labels) if name == "ce"
             else row_term(name, logits, inputs.temperature, inputs.teacher_sparse, **params) for name, params in rows]
    inputs.fused = dict(zip([name for name, _ in rows], chunked_terms(logits, parts).unbind()))


@TERMS.register("ce")
def ce(inputs: TermInputs) -> torch.Tensor:
    """Cross-entropy with the hard labels; over more than one chunk of logits (a language
    model's vocabulary), in row chunks that hold no full-size log-softmax."""
    if "ce" in inputs.fused:
        return inputs.fused["ce"]
    if inputs.student_logits.numel() > CHUNK_ELEMENTS:
        return chunked_cross_entropy(inputs.student_logits, inputs.labels)
    return F.cross_entropy(inputs.student_logits, inputs.labels)


def _sparse(inputs: TermInputs, term: str, **params) -> Optional[torch.Tensor]:
    """The term from sparse targets (`students.sparse_kd`), when the batch's records are top-k."""
    if inputs.teacher_sparse is None:
        return None
    if term in inputs.fused:
        return inputs.fused[term]
    return sparse_term(term, inputs.student_logits, inputs.temperature, inputs.teacher_sparse, **params)


@TERMS.register("kd")
def forward_kl(inputs: TermInputs) -> torch.Tensor:
    """Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network":
    T^2 * KL(p_t(T) || p_s(T)), batch mean. T^2 keeps the gradient scale independent of T."""
    sparse = _sparse(inputs, "kd")
    if sparse is not None:
        return sparse
    return _kl(inputs.need_teacher("kd"), inputs.student_logprob()).mean() * inputs.temperature**2


@TERMS.register("lwf")
def learning_without_forgetting(inputs: TermInputs, classes: Optional[list[int]] = None) -> torch.Tensor:
    """Li and Hoiem (2017), "Learning without Forgetting": the old model (the teacher: the
    student as it was after the earlier tasks) is matched on the classes of those tasks only,
    T^2 * KL(p_old(T) || p_s(T)) with both distributions renormalized over `classes` (the
    paper's old-task heads; here slices of one shared head). A continual run fills `classes`
    with the classes of the earlier tasks; without it this is plain KD."""
    teacher, student = inputs.need_teacher("lwf"), inputs.student_logprob()
    if classes is not None:
        index = torch.as_tensor(classes, dtype=torch.long, device=student.device)
        teacher = torch.log_softmax(teacher.index_select(1, index), dim=-1)
        student = torch.log_softmax(student.index_select(1, index), dim=-1)
    return _kl(teacher, student).mean() * inputs.temperature**2


@TERMS.register("reverse_kl")
def reverse_kl(inputs: TermInputs) -> torch.Tensor:
    """T^2 * KL(p_s(T) || p_t(T)): mode-seeking (the student concentrates on the teacher's main
    modes), as used for generative students by Gu et al. (2024), "MiniLLM"."""
    sparse = _sparse(inputs, "reverse_kl")
    if sparse is not None:
        return sparse
    return _kl(inputs.student_logprob(), inputs.need_teacher("reverse_kl")).mean() * inputs.temperature**2


@TERMS.register("jsd")
def jensen_shannon(inputs: TermInputs, beta: float = 0.5) -> torch.Tensor:
    """T^2 * generalized Jensen-Shannon divergence (Agarwal et al. 2024, "On-Policy Distillation of
    Language Models"): m = beta p_t + (1 - beta) p_s;
    JSD_beta = beta KL(p_t || m) + (1 - beta) KL(p_s || m). beta = 0.5 is the symmetric JSD."""
    sparse = _sparse(inputs, "jsd", beta=beta)
    if sparse is not None:
        return sparse
    t, s = inputs.need_teacher("jsd"), inputs.student_logprob()
    m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), dim=0)
    return (beta * _kl(t, m) + (1 - beta) * _kl(s, m)).mean() * inputs.temperature**2


@TERMS.register("logit_mse")
def logit_mse(inputs: TermInputs) -> torch.Tensor:
    """Ba and Caruana (2014), "Do Deep Nets Really Need to be Deep?": mean_c (z_s - z_t)^2.
    Records carry a distribution's logits up to a shift per row, T log p(T), so both sides are
    centred per row (the zero-mean logits of Hinton et al.'s logit-matching limit); an
    encoder's embeddings are matched as they are. Needs dense records (top-k and sampled
    records carry a few log-probabilities only)."""
    if inputs.teacher_logits is None:
        raise ValueError("distillation term 'logit_mse' needs dense teacher logits")
    student = inputs.student_logits
    if inputs.centred_logits:
        student = student - student.mean(dim=-1, keepdim=True)
    return F.mse_loss(student, inputs.teacher_logits)


def _target_split(logprob: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log [p_y, 1 - p_y] as [B, 2], log-distribution over the non-target classes [B, C] with
    the target at -inf)."""
    target = logprob.gather(1, labels[:, None]).squeeze(1).clamp(max=-1e-7)
    rest = torch.log(-torch.expm1(target))  # log(1 - p_y), stable
    binary = torch.stack([target, rest], dim=1)
    mask = F.one_hot(labels, logprob.shape[1]).bool()
    non_target = (logprob - rest[:, None]).masked_fill(mask, -math.inf)
    return binary, non_target


@TERMS.register("dkd")
def decoupled_kd(inputs: TermInputs, alpha: float = 1.0, beta: float = 8.0) -> torch.Tensor:
    """Zhao et al. (2022), "Decoupled Knowledge Distillation":
    T^2 * (alpha * KL(b_t || b_s) + beta * KL(p^_t || p^_s)), where b = [p_y, 1 - p_y] is the
    target/non-target split (TCKD) and p^ the distribution renormalized over the non-target
    classes (NCKD). Plain KD is the special case that weights NCKD by (1 - p_t,y)."""
    tb, tn = _target_split(inputs.need_teacher("dkd"), inputs.labels)
    sb, sn = _target_split(inputs.student_logprob(), inputs.labels)
    return (alpha * _kl(tb, sb) + beta * _kl(tn, sn)).mean() * inputs.temperature**2


@TERMS.register("ntce_kd")
def non_target_enhanced_kd(inputs: TermInputs, shrink: tuple[float, ...] = (1.0, 2.0, 4.0)) -> torch.Tensor:
    """The magnitude-enhanced KL of Li et al. (2024), "NTCE-KD: Non-Target-Class-Enhanced
    Knowledge Distillation": the target class's probability is shrunk by each factor s
    (log p_y - log s, then renormalized) in teacher and student alike, so the non-target classes
    weigh more in the KL; the terms are averaged over the factors:
    T^2 * mean_s KL(shrink_s(p_t) || shrink_s(p_s)). (The paper's diversity-based data
    augmentation is a data pipeline, not a loss, and is not part of this term.)"""
    t, s = inputs.need_teacher("ntce_kd"), inputs.student_logprob()
    mask = F.one_hot(inputs.labels, t.shape[1]).bool()
    total = 0.0
    for factor in shrink:
        shift = torch.zeros_like(t).masked_fill(mask, -math.log(factor))
        total = total + _kl(F.log_softmax(t + shift, -1), F.log_softmax(s + shift, -1)).mean()
    return total / len(shrink) * inputs.temperature**2


@TERMS.register("adversarial")
def adversarial(inputs: TermInputs, hidden: int = 64, lr: float = 1e-3) -> torch.Tensor:
    """Xu et al. (2018), adversarial KD: the non-saturating generator loss
    -log sigmoid(D(p_s(T))), batch mean, with D the discriminator of students.discriminator,
    which learns alternately to tell the teachers' p_t(T) from the student's (`hidden` and `lr`
    are D's width and learning rate). Use it next to `kd`: it only pushes the student's
    distributions to look like a teacher's."""
    inputs.need_teacher("adversarial")  # D learns from the teachers: no teacher, no term
    if inputs.discriminator is None:
        raise ValueError("distillation term 'adversarial' needs the discriminator (students.discriminator.Adversary)")
    return F.softplus(-inputs.discriminator(inputs.student_logprob().exp())).mean()


# --- feature-based ---------------------------------------------------------------------------

def _student_feature(inputs: TermInputs, layer: str, term: str) -> torch.Tensor:
    if layer not in inputs.student_features:
        raise ValueError(f"distillation term {term!r}: the student has no feature {layer!r}; "
                         f"hooked: {sorted(inputs.student_features)}")
    return inputs.student_features[layer]


def feature_pair(inputs: TermInputs, student: str, teacher: str, term: str) -> tuple[torch.Tensor, torch.Tensor]:
    fs = _student_feature(inputs, student, term)
    if teacher not in inputs.teacher_features:
        raise ValueError(f"distillation term {term!r}: no teacher sent feature {teacher!r}; "
                         f"received: {sorted(inputs.teacher_features)}")
    return fs, inputs.teacher_features[teacher].to(inputs.student_logits.dtype)


def projector_key(student: str, teacher: str) -> str:
    return f"{student}->{teacher}".replace(".", "_")


def exit_key(layer: str) -> str:
    """The key of the classifier head on student layer `layer` (self-distillation exits)."""
    return f"exit:{layer}".replace(".", "_")


def _module(inputs: TermInputs, key: str, term: str) -> torch.nn.Module:
    if inputs.projectors is None or key not in inputs.projectors:
        raise ValueError(f"distillation term {term!r}: no module {key!r} was built in the student")
    return inputs.projectors[key]


@TERMS.register("fitnet")
def fitnet_hint(inputs: TermInputs, student: str, teacher: str, projector: bool = True) -> torch.Tensor:
    """Romero et al. (2015), "FitNets: Hints for Thin Deep Nets": ||r(f_s) - f_t||^2 (mean),
    with r a learned projector from the student's width to the teacher's (a linear map for
    [B, d] hidden states and [B, T, d] sequences, a 1x1 convolution for [B, C, H, W] maps;
    spatial sizes must match). `projector: false` matches the features directly (r = identity,
    as TinyBERT's hidden-state loss for equal widths), so the student's own hidden states move."""
    fs, ft = feature_pair(inputs, student, teacher, "fitnet")
    if not projector:
        if fs.shape != ft.shape:
            raise ValueError(f"fitnet without projector: student feature {student!r} {tuple(fs.shape)} and teacher "
                             f"feature {teacher!r} {tuple(ft.shape)} differ; keep projector: true")
        return F.mse_loss(fs, ft)
    return F.mse_loss(_module(inputs, projector_key(student, teacher), "fitnet")(fs), ft)


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Zagoruyko and Komodakis: the spatial map sum_c |A_c|^2 of [B, C, H, W], flattened, L2-normalized."""
    return F.normalize(feature.pow(2).mean(1).flatten(1), dim=1)


@TERMS.register("attention_transfer")
def attention_transfer(inputs: TermInputs, student: str, teacher: str) -> torch.Tensor:
    """Zagoruyko and Komodakis (2017), "Paying More Attention to Attention":
    mean_b || Q_s / ||Q_s|| - Q_t / ||Q_t|| ||_2^2 with Q = vec(sum_c |A_c|^2) of a [B, C, H, W]
    feature map (channel counts may differ; spatial sizes must match)."""
    fs, ft = feature_pair(inputs, student, teacher, "attention_transfer")
    if fs.ndim != 4 or ft.ndim != 4 or fs.shape[-2:] != ft.shape[-2:]:
        raise ValueError(f"attention_transfer needs [B, C, H, W] maps of equal H, W; got {tuple(fs.shape)} "
                         f"and {tuple(ft.shape)}")
    return (attention_map(fs) - attention_map(ft)).pow(2).sum(1).mean()


# --- relation-based --------------------------------------------------------------------------

def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).float()


def _relation_pair(inputs: TermInputs, student: Optional[str], teacher: Optional[str], term: str):
    """Features named by the term, or the logits (student) and log-probabilities (teacher)."""
    if student is None and teacher is None:
        return _flat(inputs.student_logits), _flat(inputs.need_teacher(term).exp())
    fs, ft = feature_pair(inputs, student, teacher, term)
    return _flat(fs), _flat(ft)


def _normalized_distances(x: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, x)
    off_diagonal = d[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    return d / off_diagonal.mean().clamp(min=1e-12)


@TERMS.register("rkd_distance")
def rkd_distance(inputs: TermInputs, student: Optional[str] = None, teacher: Optional[str] = None) -> torch.Tensor:
    """Park et al. (2019), "Relational Knowledge Distillation", distance-wise: Huber loss between
    the pairwise distances of the batch's embeddings, each normalized by its mean over pairs."""
    s, t = _relation_pair(inputs, student, teacher, "rkd_distance")
    return F.smooth_l1_loss(_normalized_distances(s), _normalized_distances(t.detach()))


def _angles(x: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # diff[i, j] = unit(x_j - x_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()      # cos of angle j-i-k, all triplets


@TERMS.register("rkd_angle")
def rkd_angle(inputs: TermInputs, student: Optional[str] = None, teacher: Optional[str] = None) -> torch.Tensor:
    """Park et al. (2019), angle-wise: Huber loss between cos angle(x_j - x_i, x_k - x_i) over
    all triplets of the batch, student against teacher."""
    s, t = _relation_pair(inputs, student, teacher, "rkd_angle")
    return F.smooth_l1_loss(_angles(s), _angles(t.detach()))


@TERMS.register("similarity_preserving")
def similarity_preserving(inputs: TermInputs, student: Optional[str] = None,
                          teacher: Optional[str] = None) -> torch.Tensor:
    """Tung and Mori (2019), "Similarity-Preserving Knowledge Distillation":
    ||G_s - G_t||_F^2 / b^2 with G = row-L2-normalized (A A^T), A the flattened activations."""
    s, t = _relation_pair(inputs, student, teacher, "similarity_preserving")
    gs, gt = F.normalize(s @ s.T, dim=1), F.normalize(t @ t.T, dim=1)
    return (gs - gt).pow(2).sum() / len(s) ** 2


# --- transformer attention -------------------------------------------------------------------

def _relation_heads(x: torch.Tensor, heads: int, what: str) -> torch.Tensor:
    """[B, T, d] -> [B, heads, T, d / heads]."""
    if x.ndim != 3 or x.shape[-1] % heads:
        raise ValueError(f"minilm: {what} must be [B, T, d] with d divisible by heads={heads}, got {tuple(x.shape)}")
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def _relation_logprob(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log softmax(a b^T / sqrt(d)) over the last axis, [B, H, T, T]."""
    return F.log_softmax(a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1]), dim=-1)


@TERMS.register("minilm")
def minilm(inputs: TermInputs, student: list[str], teacher: list[str], heads: int = 12) -> torch.Tensor:
    """Wang et al. (2020), "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression
    of Pre-Trained Transformers": KL(teacher || student) of the last layer's self-attention
    distributions softmax(Q K^T / sqrt(d_h)) plus that of its value relations
    softmax(V V^T / sqrt(d_h)), averaged over heads and query positions. `student` and `teacher`
    name the query, key and value projections ([B, T, d]); both sides are split into the same
    number of relation heads (as in MiniLMv2), so the student may have fewer heads and a smaller
    width than the teacher."""
    if len(student) != 3 or len(teacher) != 3:
        raise ValueError("minilm: student and teacher each name [query, key, value] projections")
    pairs = [feature_pair(inputs, s, t, "minilm") for s, t in zip(student, teacher)]
    (sq, tq), (sk, tk), (sv, tv) = [(_relation_heads(s, heads, "student " + n), _relation_heads(t, heads, "teacher " + n))
                                    for (s, t), n in zip(pairs, ("query", "key", "value"))]
    attention = _kl(_relation_logprob(tq, tk), _relation_logprob(sq, sk)).mean()
    values = _kl(_relation_logprob(tv, tv), _relation_logprob(sv, sv)).mean()
    return attention + values


# --- self-distillation -----------------------------------------------------------------------

@TERMS.register("byot")
def be_your_own_teacher(inputs: TermInputs, exits: list[str], alpha: float = 0.5, deepest: Optional[str] = None,
                        feature_weight: float = 0.0) -> torch.Tensor:
    """Zhang et al. (2019), "Be Your Own Teacher: Improve the Performance of Convolutional Neural
    Networks via Self Distillation": a classifier head h_i on each shallow student layer in
    `exits` learns from the labels and from the network's own deepest exit (its final logits
    z_C, no gradient), summed over the shallow exits:
    (1 - alpha) CE(h_i(F_i), y) + alpha T^2 KL(p_C(T) || p_i(T)) + feature_weight ||r_i(F_i) - F_C||^2,
    F_C the output of layer `deepest` (no gradient) and r_i a learned projector to its shape.
    The deepest exit's own cross-entropy is the run's `ce` term; no served teacher is needed."""
    teacher_logprob = F.log_softmax(inputs.student_logits.detach() / inputs.temperature, dim=-1)
    deepest_feature = _student_feature(inputs, deepest, "byot").detach() if feature_weight else None
    total = torch.zeros((), device=inputs.student_logits.device)
    for layer in exits:
        feature = _student_feature(inputs, layer, "byot")
        logits = _module(inputs, exit_key(layer), "byot")(feature)
        kd = _kl(teacher_logprob, F.log_softmax(logits / inputs.temperature, dim=-1)).mean() * inputs.temperature**2
        total = total + (1 - alpha) * F.cross_entropy(logits, inputs.labels) + alpha * kd
        if deepest_feature is not None:
            projected = _module(inputs, projector_key(layer, deepest), "byot")(feature)
            total = total + feature_weight * F.mse_loss(projected, deepest_feature)
    return total
