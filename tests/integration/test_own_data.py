"""Your own data: Parquet files a user wrote (the repo's example script), checked by
`distillery check` without Ray, then distilled with a served teacher and 2 Train workers under
ZeRO-2, in a real terminal: the screen shows the run's own view and its results, none of
Ray's, Serve's, Train's or DeepSpeed's output, which is in the run's `logs/run.log`. The students' transfer set has no 3s (Hinton et al. 2015): the KD student, taught by a
teacher that saw every digit, beats the no-KD student, which cannot predict a 3 at all. A JSONL
of prompts and completions trains a causal-LM teacher, and students that stream their rows
through Ray Data (tokenized in the read tasks) learn from it: the KD student's held-out
perplexity is below its baseline's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import RAY_OUTPUT, REPO, distillery, distillery_in_terminal, own_digits

pytestmark = pytest.mark.integration


def test_a_run_from_parquet_files_with_a_transfer_set_lacking_a_class(ray_cluster, tmp_path):
    data = tmp_path / "digits"
    files = tuple(arg for path, value in own_digits(data).items() for arg in ("--set", f"{path}={value}"))
    config = "deploy/configs/own_data.yaml"

    missing = distillery("check", config, "--set", f"data.source.train={data}/nothing-*.parquet")
    assert missing.returncode == 2 and "nothing-*.parquet: no file matches" in missing.stdout, missing.stdout

    check = distillery("check", config, *files)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "train (students)" in check.stdout and "300" in check.stdout and "classes:10" in check.stdout

    code, screen = distillery_in_terminal("run", config, *files, "--set", "run.seeds=[0]", "--set", "student.epochs=20",
                                          "--output-dir", str(tmp_path / "runs"), timeout=600)
    assert code == 0, screen[-4000:]
    for foreign in RAY_OUTPUT:
        assert foreign not in screen, f"{foreign!r} reached the screen:\n{screen}"
    assert "Distillery run own-data" in screen and "KD gain over the no-KD baseline" in screen  # results, verdict
    assert "logs of Ray, Serve, Train and DeepSpeed:" in screen and "kd-seed0: test accuracy" in screen
    log = (tmp_path / "runs" / "own-data" / "logs" / "run.log").read_text(errors="replace")
    assert "Connected to Ray cluster" in log and "RayTrainWorker" in log  # what the screen was spared
    phases = json.loads((tmp_path / "runs" / "own-data" / "state.json").read_text())["phases"]
    kd, baseline = phases["kd-seed0"]["test_accuracy"], phases["baseline-seed0"]["test_accuracy"]
    assert baseline < 0.91  # it never saw a 3: at most the other nine digits' share of the test split
    assert kd > baseline + 0.03, (kd, baseline)


def test_a_language_model_run_from_jsonl_prompts_and_completions(ray_cluster, tmp_path):
    data = tmp_path / "functions"
    written = subprocess.run([sys.executable, "deploy/examples/write_own_functions.py", "--out", str(data),
                              "--train-rows", "512", "--test-rows", "128", "--max-prompt-chars", "30"], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert written.returncode == 0, written.stderr
    files = ("--set", f"data.source.train={data}/train.jsonl", "--set", f"data.source.test={data}/test.jsonl")
    config = "tests/integration/configs/own_llm.yaml"
    check = distillery("check", config, *files)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "512" in check.stdout and "longer than data.sequence_length 32 tokens" in check.stdout

    # the students stream their 128 rows (the first of train) through Ray Data, tokenized in the read tasks
    lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
    (data / "transfer.jsonl").write_text("".join(lines[:128]))
    streamed = ("--set", f"data.source.transfer={data}/transfer.jsonl", "--set", "data.source.stream=true",
                "--set", "data.student_train_samples=null")
    check = distillery("check", config, *files, *streamed)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "train (students, streamed)" in check.stdout
    run = distillery("run", config, *files, *streamed, "--output-dir", str(tmp_path / "runs"), timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {r["kind"]: r for r in json.loads((tmp_path / "runs" / "own-llm-test" / "results.json").read_text())}
    assert set(rows) == {"teacher", "kd:dense", "baseline"}
    assert all(1.0 < r["score_mean"] < 1024 for r in rows.values())  # better than uniform over the vocabulary
    assert rows["kd:dense"]["score_mean"] < rows["baseline"]["score_mean"], rows  # held-out perplexity
