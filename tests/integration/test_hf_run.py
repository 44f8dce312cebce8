"""A Hugging Face teacher served by Ray Serve distils into a Hugging Face student: token ids go
through the data plan and Serve, the teacher's attention projections and hidden states reach
the student's feature and MiniLM terms, and the students are scored on held-out text."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.hf_models import HEADS, HIDDEN, tiny_bert
from tests.conftest import distillery

pytestmark = pytest.mark.integration


def layer(prefix: str, i: int, part: str = "") -> str:
    return f"{prefix}encoder.encoder.layer.{i}{part}"


def qkv(prefix: str, i: int) -> list[str]:
    return [layer(prefix, i, f".attention.self.{p}") for p in ("query", "key", "value")]


def test_hf_teacher_distils_into_an_hf_student(ray_cluster, tmp_path):
    bert = str(tiny_bert(tmp_path / "bert", seed=7))  # the student starts from other random weights
    model = {"factory": "models.hf:sentence_encoder", "kwargs": {"path": bert}}
    config = {
        "run": {"name": "hf", "seeds": [0]},
        "data": {"dataset": "stdlib_docstrings", "tokenizer": bert, "sequence_length": 16, "train_windows": 64,
                 "test_windows": 32, "embedding_dim": HIDDEN},
        "teachers": [{"name": "bert", "model": model, "pretrained": True, "resources": {"num_cpus": 0.1}}],
        "student": {"model": {**model, "kwargs": {"path": bert, "layers": [1], "pretrained": False}}, "epochs": 3, "micro_batch_size": 8,
                    "lr": 0.001, "num_workers": 2, "cpus_per_worker": 0.5, "log_every": 2},
        "distill": {"temperature": 1.0, "prefetch": 4, "batches_per_request": 2, "terms": [
            {"name": "logit_mse"},
            {"name": "fitnet", "params": {"student": layer("", 0), "teacher": layer("bert/", 1), "projector": False}},
            {"name": "minilm", "params": {"student": qkv("", 0), "teacher": qkv("bert/", 1), "heads": HEADS}}]},
    }
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(config))
    result = distillery("run", str(path), "--output-dir", str(tmp_path), timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mean cosine to the teacher" in result.stdout and "(pretrained)" in result.stdout
    rows = {r["kind"]: r for r in json.loads((tmp_path / "hf" / "results.json").read_text())}
    assert rows["teacher"]["score_mean"] == pytest.approx(1.0, abs=1e-6)  # the teacher is the reference
    assert rows["kd"]["score_mean"] > rows["baseline"]["score_mean"]  # KD moves the student toward the teacher
    assert rows["baseline"]["model"] == "student (untrained)"
    records = [json.loads(line) for line in (tmp_path / "hf" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r.get("phase") == "kd-seed0" and r["rank"] == 0 and "loss/minilm" in r]
    # the random tiny teacher attends almost uniformly, so the MiniLM term starts near zero: check it
    # is computed from the served features on every step rather than that it falls
    assert kd and all(0 <= r["loss/minilm"] < 1 and r["loss/fitnet"] >= 0 for r in kd)
    assert any("eval/test_rank_agreement" in r for r in records)
