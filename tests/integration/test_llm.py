"""Language-model distillation on a real local Ray: a causal-LM teacher served by Ray Serve
teaches causal-LM students token by token (dense and top-k records, forward KL and JSD) under
Ray Train + DeepSpeed, scored by held-out perplexity; a teacher with another tokenizer is
refused when it is added, before it is trained or deployed."""

from __future__ import annotations

import json

import pytest
import ray
import yaml

from cluster.config import load_run_config
from tests.hf_fixtures import MINILM
from tests.integration.conftest import CONFIGS, distillery

pytestmark = pytest.mark.integration


def test_token_level_kd_run_reports_perplexity(ray_cluster, tmp_path):
    result = distillery("run", str(CONFIGS / "llm.yaml"), "--output-dir", str(tmp_path), timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "held-out perplexity" in result.stdout and "keeps" in result.stdout  # top-8's share of dense's gain
    run_dir = tmp_path / "llm-test"
    rows = {r["kind"]: r for r in json.loads((run_dir / "results.json").read_text())}
    assert set(rows) == {"teacher", "kd:dense", "kd:top8", "baseline"}
    assert all(1.0 < r["score_mean"] < 1024 for r in rows.values())  # better than uniform over the vocabulary
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("rank") == 0 and ("loss/kd" in r or "loss/jsd" in r)]
    assert {r["phase"] for r in steps} == {"kd-dense-seed0", "kd-top8-seed0"}
    assert all(r["throughput/tokens_per_s"] > 0 and r["teachers"] == ["gpt"] for r in steps if "throughput/tokens_per_s" in r)
    assert all(r["loss/kd"] >= 0 for r in steps if "loss/kd" in r)


def test_a_teacher_with_another_tokenizer_is_refused_when_added(ray_cluster, tmp_path):
    from orchestration.run import _shutdown, start_orchestrator
    from teachers.errors import IncompatibleTeacherError

    raw = yaml.safe_load((CONFIGS / "llm.yaml").read_text())
    raw["run"]["name"] = "llm-refusal"
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_run_config(path)
    orchestrator = start_orchestrator(cfg, tmp_path / "llm-refusal")
    bert_vocab = {**raw["teachers"][0], "name": "bert-vocab"}
    bert_vocab["model"] = {**bert_vocab["model"], "kwargs": {**bert_vocab["model"]["kwargs"], "tokenizer": MINILM}}
    try:
        with pytest.raises(IncompatibleTeacherError) as refused:
            ray.get(orchestrator.add_teacher.remote(bert_vocab))
        message = str(refused.value)
        assert "teacher 'bert-vocab' was refused" in message and "30522 tokens" in message and "1024 tokens" in message
        assert ray.get(orchestrator.teacher_set.remote()).teachers == {}
    finally:
        _shutdown(orchestrator)
