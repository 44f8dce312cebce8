"""Ray is started only with token authentication on; bad soft targets never reach the weights."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ingest import BatchId
from teachers.errors import SoftTargetError
from teachers.soft_targets import pack_soft_targets, validate_soft_targets

REPO = Path(__file__).resolve().parents[2]


def test_an_embedded_cluster_is_never_started_without_token_authentication():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run([sys.executable, "-c", "from cluster.connection import connect; connect()"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "RAY_AUTH_MODE is 'disabled'" in proc.stderr and "token authentication" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


def _record(dense: bool | str = True, **changes):
    """A dense record, a top-k one (False) or a sampled one ("sampled"), then `changes`."""
    logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    record = pack_soft_targets(logits, batch_id="b7", teacher="mlp", teacher_version="v1", temperature=2.0,
                               output_space="classes:10", dense_max_classes=1024 if dense is True else 4, top_k=4,
                               target_kind="sampled" if dense == "sampled" else "topk")
    for name, value in changes.items():
        setattr(record, name, value(getattr(record, name)) if callable(value) else value)
    return record


@pytest.mark.parametrize("dense, change, expected", [
    (True, {"logprob": np.full((4, 10), np.nan, dtype=np.float32)}, "NaN or Inf"),
    (True, {"logprob": np.full((4, 10), np.inf, dtype=np.float32)}, "NaN or Inf"),
    (True, {"logprob": np.zeros((4, 10), dtype=np.float32)}, "probabilities sum to 10, not 1"),
    (True, {"logprob": np.full((3, 10), -np.log(10), dtype=np.float32)}, "does not fit a batch of 4 rows"),
    (True, {"logprob": np.zeros((4, 9), dtype=np.float32)}, "logprob shape (4, 9)"),
    (True, {"logprob": np.zeros((4, 10), dtype=np.int32)}, "expected a float dtype"),
    (False, {"topk_idx": lambda idx: idx + 10}, "top-k token ids 11..19 fall outside [0, 10)"),
    (False, {"tail_logprob": lambda tail: tail - 3.0}, "not 1"),
    (False, {"tail_logprob": lambda tail: np.zeros_like(tail)}, "the mass outside the top k lies in [0, 1)"),
    ("sampled", {"topk_idx": lambda idx: idx + 10}, "fall outside [0, 10)"),
    ("sampled", {"sample_weight": lambda w: w * 0}, "weights must be finite and > 0"),
    ("sampled", {"sample_weight": lambda w: np.full_like(w, np.nan)}, "NaN or Inf"),
    (True, {"output_space": "classes:12"}, "does not match the student's"),
    (True, {"teacher_version": "v2"}, "teacher version changed mid-run"),
    (True, {"batch_id": "b8"}, "answers batch 'b8'"),
])
def test_a_bad_record_is_refused_before_any_weight_changes(dense, change, expected):
    """The loop validates every record before the forward pass: the student's weights stay as they were."""
    student = torch.nn.Linear(3, 10)
    before = [p.detach().clone() for p in student.parameters()]
    with pytest.raises(SoftTargetError) as err:
        record = validate_soft_targets(_record(dense, **change), batch_id=BatchId.parse("b7"), batch_size=4,
                                       output_space="classes:10",
                                       temperature=2.0, teacher_version="v1")
        torch.nn.functional.mse_loss(student(torch.ones(4, 3)), torch.from_numpy(record.logprob)).backward()
    assert expected in str(err.value) and "mlp" in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
