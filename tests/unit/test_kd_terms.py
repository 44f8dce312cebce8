"""Every distillation term against an independent few-line numpy version of its paper's formula."""

import numpy as np
import pytest
import torch

from students.kd_terms import TERMS, TermInputs, exit_key, projector_key

T = 3.0


def softmax(z, t=1.0):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(-1)


def huber(a, b):
    d = np.abs(a - b)
    return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)) * 2
    y = rng.integers(0, 5, size=6)
    fs, ft = rng.normal(size=(6, 4, 3, 3)), rng.normal(size=(6, 8, 3, 3))
    return s, t, y, fs, ft


def inputs(data, **kw):
    s, t, y, fs, ft = data
    p_t = torch.log_softmax(torch.tensor(t) / T, -1)
    return TermInputs(torch.tensor(s), torch.tensor(y), T, teacher_logprob=p_t, teacher_logits=torch.tensor(t),
                      student_features={"s": torch.tensor(fs)}, teacher_features={"t/f": torch.tensor(ft)}, **kw)


def term(name, data, **params):
    return TERMS.get(name)(inputs(data), **params).item()


def test_kd_reverse_kl_jsd(data):
    s, t, *_ = data
    p, q = softmax(t, T), softmax(s, T)
    assert term("kd", data) == pytest.approx(T**2 * kl(p, q).mean())
    assert term("reverse_kl", data) == pytest.approx(T**2 * kl(q, p).mean())
    m = 0.3 * p + 0.7 * q
    assert term("jsd", data, beta=0.3) == pytest.approx(T**2 * (0.3 * kl(p, m) + 0.7 * kl(q, m)).mean())


def test_ce_and_logit_mse(data):
    s, t, y, *_ = data
    assert term("ce", data) == pytest.approx(-np.log(softmax(s)[np.arange(6), y]).mean())
    assert term("logit_mse", data) == pytest.approx(((s - t) ** 2).mean())


def test_dkd(data):
    s, t, y, *_ = data
    p, q = softmax(t, T), softmax(s, T)
    expected = []
    for i in range(6):
        b_t, b_s = np.array([p[i, y[i]], 1 - p[i, y[i]]]), np.array([q[i, y[i]], 1 - q[i, y[i]]])
        keep = np.arange(5) != y[i]
        n_t, n_s = p[i, keep] / p[i, keep].sum(), q[i, keep] / q[i, keep].sum()
        expected.append(0.5 * kl(b_t, b_s) + 4.0 * kl(n_t, n_s))
    assert term("dkd", data, alpha=0.5, beta=4.0) == pytest.approx(T**2 * np.mean(expected), rel=1e-6)


def test_ntce_kd(data):
    s, t, y, *_ = data
    total = 0.0
    for factor in (1.0, 3.0):
        def shrink(z):
            p = softmax(z, T)
            p[np.arange(6), y] /= factor
            return p / p.sum(-1, keepdims=True)
        total += kl(shrink(t), shrink(s)).mean()
    assert term("ntce_kd", data, shrink=(1.0, 3.0)) == pytest.approx(T**2 * total / 2)


def test_attention_transfer(data):
    *_, fs, ft = data

    def q(a):
        m = (a**2).mean(1).reshape(6, -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    expected = ((q(fs) - q(ft)) ** 2).sum(1).mean()
    assert term("attention_transfer", data, student="s", teacher="t/f") == pytest.approx(expected)


def test_fitnet_uses_the_projector(data):
    *_, fs, ft = data
    conv = torch.nn.Conv2d(4, 8, 1).double()
    projectors = torch.nn.ModuleDict({projector_key("s", "t/f"): conv})
    out = TERMS.get("fitnet")(inputs(data, projectors=projectors), student="s", teacher="t/f").item()
    w, b = conv.weight.detach().numpy()[:, :, 0, 0], conv.bias.detach().numpy()
    projected = np.einsum("oc,bchw->bohw", w, fs) + b[None, :, None, None]
    assert out == pytest.approx(((projected - ft) ** 2).mean())


def test_rkd_distance_and_angle(data):
    *_, fs, ft = data
    s, t = fs.reshape(6, -1), ft.reshape(6, -1)

    def dist(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return d / d[~np.eye(6, dtype=bool)].mean()

    def angles(x):
        out = []
        for i in range(6):
            for j in range(6):
                for k in range(6):
                    a, b = x[j] - x[i], x[k] - x[i]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out.append(0.0 if na == 0 or nb == 0 else a @ b / (na * nb))
        return np.array(out)
    assert term("rkd_distance", data, student="s", teacher="t/f") == pytest.approx(huber(dist(s), dist(t)))
    assert term("rkd_angle", data, student="s", teacher="t/f") == pytest.approx(huber(angles(s), angles(t)))


def test_similarity_preserving(data):
    *_, fs, ft = data
    s, t = fs.reshape(6, -1), ft.reshape(6, -1)

    def g(a):
        m = a @ a.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    expected = ((g(s) - g(t)) ** 2).sum() / 36
    assert term("similarity_preserving", data, student="s", teacher="t/f") == pytest.approx(expected)


def test_relation_terms_default_to_outputs(data):
    s, t, *_ = data
    out = term("similarity_preserving", data)
    p = softmax(t, T)

    def g(a):
        m = a @ a.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    assert out == pytest.approx(((g(s) - g(p)) ** 2).sum() / 36)


def test_terms_name_what_is_missing(data):
    with pytest.raises(ValueError, match="no feature 'nope'"):
        TERMS.get("fitnet")(inputs(data), student="nope", teacher="t/f")
    with pytest.raises(ValueError, match="needs teacher soft targets"):
        TERMS.get("kd")(TermInputs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), T))


def test_minilm_attention_and_value_relations():
    rng = np.random.default_rng(1)
    b, t, heads = 2, 4, 2
    teacher = {n: rng.normal(size=(b, t, 8)) for n in "qkv"}
    student = {n: rng.normal(size=(b, t, 4)) for n in "qkv"}

    def split(x):
        return x.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)

    def rel(a, c):
        a, c = split(a), split(c)
        return softmax(a @ c.transpose(0, 1, 3, 2) / np.sqrt(a.shape[-1]))
    expected = kl(rel(teacher["q"], teacher["k"]), rel(student["q"], student["k"])).mean() + \
        kl(rel(teacher["v"], teacher["v"]), rel(student["v"], student["v"])).mean()
    inputs_ = TermInputs(torch.zeros(b, 3), torch.zeros(b, dtype=torch.long), T,
                         student_features={f"s.{n}": torch.tensor(v) for n, v in student.items()},
                         teacher_features={f"t/l.{n}": torch.tensor(v) for n, v in teacher.items()})
    out = TERMS.get("minilm")(inputs_, student=["s.q", "s.k", "s.v"], teacher=["t/l.q", "t/l.k", "t/l.v"], heads=heads)
    assert out.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="divisible by heads=3"):
        TERMS.get("minilm")(inputs_, student=["s.q", "s.k", "s.v"], teacher=["t/l.q", "t/l.k", "t/l.v"], heads=3)


def test_byot_exits_learn_from_the_deepest_exit(data):
    s, _, y, *_ = data
    rng = np.random.default_rng(2)
    shallow, deep = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    head, hint = torch.nn.Linear(4, 5).double(), torch.nn.Linear(4, 3).double()
    modules = torch.nn.ModuleDict({exit_key("l.1"): head, projector_key("l.1", "l.3"): hint})
    logits = torch.tensor(s, requires_grad=True)
    inputs_ = TermInputs(logits, torch.tensor(y), T, projectors=modules,
                         student_features={"l.1": torch.tensor(shallow), "l.3": torch.tensor(deep)})
    out = TERMS.get("byot")(inputs_, exits=["l.1"], alpha=0.4, deepest="l.3", feature_weight=0.2)

    def linear(layer, x):
        return x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
    z = linear(head, shallow)
    ce = -np.log(softmax(z)[np.arange(6), y]).mean()
    kd = T**2 * kl(softmax(s, T), softmax(z, T)).mean()
    hint_mse = ((linear(hint, shallow) - deep) ** 2).mean()
    assert out.item() == pytest.approx(0.6 * ce + 0.4 * kd + 0.2 * hint_mse)
    out.backward()
    assert logits.grad is None or not logits.grad.abs().sum()  # the deepest exit is the teacher: no gradient


def test_lwf_matches_the_old_model_on_the_old_classes_only(data):
    s, t, y, _, _ = data
    old = [0, 3]
    expected = T**2 * kl(softmax(t[:, old], T), softmax(s[:, old], T)).mean()
    assert TERMS.get("lwf")(inputs(data), classes=old).item() == pytest.approx(expected, rel=1e-6)
    plain = T**2 * kl(softmax(t, T), softmax(s, T)).mean()
    assert TERMS.get("lwf")(inputs(data)).item() == pytest.approx(plain, rel=1e-6)
