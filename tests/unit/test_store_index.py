"""The store's row index: runs of each sample's consecutive rows give the rows a per-row index
gives, in the same order, and cost a few integers per sample when rows lie together."""

import numpy as np
import pyarrow as pa
import pytest

from teachers.store_index import RowRuns, samples_by_id


def rows_by_sorting(shards):
    """The per-row reference: every row's sample, rows ordered by sample (stable)."""
    sample = np.concatenate(shards)
    order = np.argsort(sample, kind="stable")
    return {s: order[sample[order] == s] for s in np.unique(sample)}


@pytest.mark.parametrize("layout", ["contiguous", "split across shards", "scattered"])
def test_runs_find_the_rows_a_per_row_index_finds(layout):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=200)  # rows per sample (token targets of one sequence)
    rows = np.repeat(rng.permutation(200), lengths)
    if layout == "scattered":
        rows = rng.permutation(rows)
    cuts = sorted(rng.choice(np.arange(1, len(rows)), size=4, replace=False))  # inside samples' runs too
    shards = np.split(rows, cuts)
    runs = RowRuns.build(shards)
    want = rows_by_sorting(shards)
    asked = rng.choice(200, size=50)
    assert np.array_equal(runs.rows_of(asked), np.concatenate([want[s] for s in asked]))
    assert np.array_equal(runs.held_samples(), np.arange(200))
    if layout == "contiguous":
        assert len(runs.start) <= 200 + len(cuts) and runs.nbytes < 8 * 3 * 210  # per sample, not per row


def test_a_sample_without_rows_has_none_and_one_past_the_store_is_refused():
    runs = RowRuns.build([np.array([0, 0, 2]), np.array([2, 4])])
    assert runs.rows_of(np.array([1, 3])).size == 0 and runs.rows_of(np.array([5])).size == 0  # 5: the empty end
    assert np.array_equal(runs.rows_of(np.array([2, 0])), [2, 3, 0, 1])
    assert np.array_equal(runs.held_samples(), [0, 2, 4])
    with pytest.raises(IndexError, match="outside 0..5"):
        runs.rows_of(np.array([6]))
    assert RowRuns.build([]).num_samples == 1


def test_ids_are_numbered_by_sorted_order_across_shards():
    shards = [pa.chunked_array([["b", "b", "a"], ["c"]]), pa.chunked_array([["a", "é", "d"]])]
    ids, runs = samples_by_id(shards)
    assert ids.tolist() == ["a", "b", "c", "d", "é"]
    assert np.array_equal(runs.rows_of(np.array([0])), [2, 4]) and np.array_equal(runs.rows_of(np.array([4])), [5])
