"""On a GPU the losses take CUDA student logits and give the CPU's numbers (skipped without CUDA)."""

import numpy as np
import pytest
import torch

from students.losses import hinton_kd, logit_mse
from teachers.soft_targets import pack_soft_targets
from teachers.targets import TeacherTargets

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("loss", [hinton_kd, logit_mse])
def test_losses_on_cuda_match_cpu(loss):
    rng = np.random.default_rng(0)
    student = torch.from_numpy(rng.normal(size=(8, 10)).astype(np.float32))
    record = pack_soft_targets(rng.normal(size=(8, 10)).astype(np.float32), batch_id="b", teacher="t",
                               teacher_version="v", temperature=4.0, output_space="classes:10",
                               dense_max_classes=1024, top_k=64)
    labels = torch.from_numpy(rng.integers(0, 10, size=8))
    targets = TeacherTargets({"t": record}, {"t": 1.0})
    cpu = loss(student, labels, targets, alpha=0.3, temperature=4.0)["total"]
    cuda = loss(student.cuda(), labels.cuda(), targets, alpha=0.3, temperature=4.0)["total"]
    assert cuda.device.type == "cuda"
    assert cuda.item() == pytest.approx(cpu.item(), rel=1e-5)


TERM_PARAMS = {
    "ce": {}, "kd": {}, "reverse_kl": {}, "jsd": {}, "logit_mse": {}, "dkd": {}, "ntce_kd": {},
    "fitnet": {"student": "map", "teacher": "t/map"},
    "attention_transfer": {"student": "map", "teacher": "t/map"},
    "rkd_distance": {}, "rkd_angle": {"student": "map", "teacher": "t/map"},
    "similarity_preserving": {"student": "map", "teacher": "t/map"},
    "minilm": {"student": ["q", "k", "v"], "teacher": ["t/q", "t/k", "t/v"], "heads": 2},
    "byot": {"exits": ["map"], "deepest": "deep", "feature_weight": 0.5},
}


def term_inputs(device: str):
    from students.kd_terms import TermInputs, exit_key, projector_key

    rng = np.random.default_rng(1)
    t = lambda *shape: torch.from_numpy(rng.normal(size=shape).astype(np.float32)).to(device)  # noqa: E731
    torch.manual_seed(0)
    modules = torch.nn.ModuleDict({
        projector_key("map", "t/map"): torch.nn.Conv2d(4, 6, 1),
        exit_key("map"): torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)),
        projector_key("map", "deep"): torch.nn.Conv2d(4, 3, 1)}).to(device)
    logits = t(8, 10)
    return TermInputs(logits, torch.from_numpy(rng.integers(0, 10, size=8)).to(device), 4.0,
                      teacher_logprob=torch.log_softmax(t(8, 10) / 4.0, -1), teacher_logits=t(8, 10),
                      student_features={"map": t(8, 4, 5, 5), "deep": t(8, 3, 5, 5), "q": t(8, 6, 4), "k": t(8, 6, 4),
                                        "v": t(8, 6, 4)},
                      teacher_features={"t/map": t(8, 6, 5, 5), "t/q": t(8, 6, 8), "t/k": t(8, 6, 8), "t/v": t(8, 6, 8)},
                      projectors=modules)


def test_every_registered_term_runs_on_cuda_and_matches_cpu():
    from students.kd_terms import TERMS

    assert set(TERM_PARAMS) == set(TERMS.names()), "a new term needs its CUDA check here"
    cpu, cuda = term_inputs("cpu"), term_inputs("cuda")
    for name, params in TERM_PARAMS.items():
        expected = TERMS.get(name)(cpu, **params).item()
        got = TERMS.get(name)(cuda, **params)
        assert got.device.type == "cuda", name
        assert got.item() == pytest.approx(expected, rel=1e-4, abs=1e-5), name
