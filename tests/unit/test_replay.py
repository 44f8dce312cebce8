"""Continual replay with stored targets: a memory store written in the offline store format
replaces the served targets of replayed samples, exactly, and leaves the others alone."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from orchestration.regimes.continual import MemoryTargets
from teachers.arrow_codec import to_table
from teachers.soft_targets import pack_soft_targets
from teachers.store import StoreKey, write_manifest
from students.teacher_merge import record_logprob
from teachers.targets import TeacherTargets

pytestmark = pytest.mark.usefixtures("own_cache")
T, C = 2.0, 10


def memory_store(folder, rows, logits):
    record = pack_soft_targets(logits, batch_id="", teacher="memory-a", teacher_version="v1", temperature=T,
                               output_space=f"classes:{C}", dense_max_classes=1, top_k=C)
    folder.mkdir()
    pq.write_table(to_table(record, sample=np.asarray(rows)), folder / "part-00000.parquet")
    write_manifest(folder, StoreKey("d", "memory-a", "v1", C, T), None)
    return str(folder)


def test_replayed_rows_take_the_stored_distribution(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(3, C)).astype(np.float32) * 3
    memory = MemoryTargets([memory_store(tmp_path / "task0", [4, 9, 20], stored)], T)
    served = pack_soft_targets(rng.normal(size=(4, C)).astype(np.float32), batch_id="b", teacher="snap",
                               teacher_version="v2", temperature=T, output_space=f"classes:{C}",
                               dense_max_classes=1024, top_k=C)
    targets = TeacherTargets({"snap": served}, {"snap": 1.0})
    patched, replayed = memory.patch(targets, np.array([9, 5, 20, 7]))  # rows 9 and 20 are in the memory
    assert replayed == 2
    got = record_logprob(patched.records["snap"], T)
    want = torch.log_softmax(torch.tensor(stored) / T, dim=-1)
    # the store keeps float16 log-probabilities
    assert torch.allclose(got[0], want[1], atol=3e-3) and torch.allclose(got[2], want[2], atol=3e-3)
    before = record_logprob(served, T)
    assert torch.equal(got[1], before[1]) and torch.equal(got[3], before[3])
    assert memory.patch(targets, np.array([1, 2]))[1] == 0


def test_a_store_at_another_temperature_is_refused(tmp_path):
    folder = memory_store(tmp_path / "task0", [1], np.zeros((1, C), np.float32))
    with pytest.raises(ValueError, match="T=2"):
        MemoryTargets([folder], temperature=4.0)


def test_a_snapshot_labels_its_memory_in_chunks_into_a_store_replay_reads(tmp_path):
    from safetensors.torch import save_file

    from models.zoo import mlp
    from orchestration.snapshots import label_memory
    from teachers.loaded import LoadedTeacher, TeacherAppArgs

    torch.manual_seed(0)
    save_file(mlp(in_features=6, num_classes=C, hidden=[8]).state_dict(), str(tmp_path / "task0.safetensors"))
    args = TeacherAppArgs(name="memory-task0", factory="models.zoo:mlp",
                          kwargs={"in_features": 6, "num_classes": C, "hidden": [8]},
                          allowed_modules=["models.zoo"], weights_path=str(tmp_path / "task0.safetensors"),
                          in_features=6, temperature=T)
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    rows = np.array([3, 8, 11, 12, 30, 31, 40])
    folder = tmp_path / "replay" / "task0"
    label_memory(args, x, rows, C, str(folder / "part-00000.parquet"), chunk=3)  # chunks of 3, 3 and 1
    snapshot = LoadedTeacher.load(args)
    write_manifest(folder, StoreKey("d", "memory-task0", snapshot.version, C, T), None)

    memory = MemoryTargets([str(folder)], T)
    served = pack_soft_targets(np.zeros((3, C), np.float32), batch_id="b", teacher="snap", teacher_version="v2",
                               temperature=T, output_space=f"classes:{C}", dense_max_classes=1024, top_k=C)
    patched, replayed = memory.patch(TeacherTargets({"snap": served}, {"snap": 1.0}), np.array([40, 8, 9]))
    assert replayed == 2
    with torch.no_grad():
        logits = snapshot.module(torch.tensor(x[[6, 1]]))
    want = torch.log_softmax(logits / T, dim=-1)
    got = record_logprob(patched.records["snap"], T)
    assert torch.allclose(got[0], want[0], atol=3e-3) and torch.allclose(got[1], want[1], atol=3e-3)
