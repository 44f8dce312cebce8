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
