"""Checkpoint integrity manifests, the pickle guard, and the exactly-once batch ledger."""

import os
import pickle

import pytest
import torch

from students.checkpoint import ClientState
from students.checkpoint_integrity import CheckpointError, integrity_problem, refuse_unsafe_pickles, write_manifest


def _two_rank_checkpoint(folder):
    """What two ranks of a ZeRO checkpoint leave after Ray merges their folders."""
    for rank in (0, 1):
        part = folder / f"part{rank}"
        (part / "student").mkdir(parents=True)
        torch.save({"w": torch.arange(4.0) + rank}, part / "student" / f"zero_pp_rank_{rank}_optim_states.pt")
        write_manifest(part, rank, 2)
    merged = folder / "merged"
    (merged / "student").mkdir(parents=True)
    (merged / "integrity").mkdir()
    for rank in (0, 1):
        for sub in ("student", "integrity"):
            for f in (folder / f"part{rank}" / sub).iterdir():
                (merged / sub / f.name).write_bytes(f.read_bytes())
    return merged


def test_a_whole_checkpoint_passes_and_each_kind_of_damage_is_named(tmp_path):
    ckpt = _two_rank_checkpoint(tmp_path)
    assert integrity_problem(ckpt) is None

    target = ckpt / "student" / "zero_pp_rank_1_optim_states.pt"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    assert "cut short" in integrity_problem(ckpt)

    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert "corrupted" in integrity_problem(ckpt)

    target.unlink()
    assert "missing" in integrity_problem(ckpt)

    target.write_bytes(data)
    (ckpt / "integrity" / "rank1.json").unlink()
    assert "1 rank manifests for a checkpoint written by [2] ranks" in integrity_problem(ckpt)

    (ckpt / "integrity" / "rank0.json").unlink()
    assert "cut short before any rank" in integrity_problem(ckpt)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "ckpt" / "student"
    folder.mkdir(parents=True)
    torch.save({"module": _RunsCode(marker)}, folder / "mp_rank_00_model_states.pt")  # pickled, not run
    with pytest.raises(CheckpointError, match="could run code") as err:
        refuse_unsafe_pickles(tmp_path / "ckpt")
    assert "system" in str(err.value) and "mp_rank_00_model_states.pt" in str(err.value)
    assert not marker.exists()

    with open(folder / "mp_rank_00_model_states.pt", "wb") as f:  # a bare pickle, not a torch file
        pickle.dump({"module": _RunsCode(marker)}, f)
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        refuse_unsafe_pickles(tmp_path / "ckpt")
    assert not marker.exists()

    torch.save({"module": {"w": torch.ones(2)}}, folder / "mp_rank_00_model_states.pt")
    refuse_unsafe_pickles(tmp_path / "ckpt")  # tensors and containers load


def test_the_ledger_counts_lost_replayed_and_unplanned_batches():
    state = ClientState(phase="kd-s0")
    for i, batch in enumerate(["e0-b0", "e0-b1", "e0-b2"]):
        state.applied(batch, i, 8)
    assert state.ledger(["e0-b0", "e0-b1", "e0-b2"]) == {
        "batches_planned": 3, "batches_lost": 0, "batches_applied_twice": 0, "batches_unplanned": 0}
    state.applied("e0-b2", 2, 8)
    state.applied("x", 3, 8)
    assert state.ledger(["e0-b0", "e0-b1", "e0-b2", "e0-b3"]) == {
        "batches_planned": 4, "batches_lost": 1, "batches_applied_twice": 1, "batches_unplanned": 1}


def test_export_takes_the_newest_complete_checkpoint_and_names_what_it_skipped(tmp_path):
    from orchestration.export import Exportable, complete_checkpoint

    train = tmp_path / "train"
    train.mkdir()
    for step in (1, 2, 3):
        _two_rank_checkpoint(tmp_path / f"build{step}").rename(train / f"checkpoint_00000{step}")
    (train / "checkpoint_000003" / "integrity" / "rank1.json").unlink()  # the newest was cut short
    newest_first = [train / f"checkpoint_00000{step}" for step in (3, 2, 1)]
    assert complete_checkpoint(Exportable("kd-seed0", False, newest_first, None)).name == "checkpoint_000002"
    for step in (1, 2):
        (train / f"checkpoint_00000{step}" / "integrity" / "rank0.json").unlink()
    assert complete_checkpoint(Exportable("kd-seed0", True, newest_first, tmp_path)) is None  # the phase's export
    with pytest.raises(CheckpointError, match="checkpoint_000003: 1 rank manifests.*checkpoint_000001"):
        complete_checkpoint(Exportable("kd-seed0", False, newest_first, None))


def test_checkpoints_and_stops_wait_for_the_step_that_closes_a_gradient_accumulation_window():
    from students.reporting import OnWindowBoundary

    checkpoint_now = OnWindowBoundary(accumulation_steps=4)
    taken = [step for step in range(1, 45) if checkpoint_now(step, due=step % 10 == 0)]
    assert taken == [12, 20, 32, 40]  # due at 10, 20, 30, 40; never inside a window
    every_step = OnWindowBoundary(accumulation_steps=1)
    assert [s for s in range(1, 25) if every_step(s, due=s % 10 == 0)] == [10, 20]
    stop_now = OnWindowBoundary(accumulation_steps=4)
    assert [stop_now(step, due=step == 5) for step in range(5, 9)] == [False, False, False, True]
