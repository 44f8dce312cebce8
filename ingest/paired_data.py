"""Cross-modal pairs: two sensor views of the same samples, logged apart and joined by pair id.

`digits_views` turns each of scikit-learn's 8x8 digits into three views, each kept in its own
table (pair id, values) in its own order, as two sensors would log them:
  image    the 64 pixels (a camera);
  profile  the 8 row sums and 8 column sums of ink (a line-scan sensor: 16 values);
  lowres   the 4x4 image of 2x2 averages (a low-resolution camera: 16 values).
`data.teacher_column` names the view the teachers read, `data.student_column` the student's;
`join_pairs` joins the two tables by pair id (an inner join: ids missing on either side drop);
`ingest.bundled.digit_view_tables` builds the dataset's tables from them.
"""

from __future__ import annotations

import numpy as np

VIEWS = ("image", "profile", "lowres")


def digit_view(pixels: np.ndarray, view: str) -> np.ndarray:
    """One view of [N, 64] pixels in [0, 1], as float32 [N, F]."""
    images = pixels.reshape(-1, 8, 8)
    if view == "image":
        return pixels.astype(np.float32)
    if view == "profile":
        return (np.concatenate([images.sum(2), images.sum(1)], axis=1) / 8).astype(np.float32)
    if view == "lowres":
        return images.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16).astype(np.float32)
    raise ValueError(f"data.teacher_column / data.student_column: unknown view {view!r}; digits_views has {list(VIEWS)}")


def sensor_table(pair_ids: np.ndarray, values: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pair ids, values) in the order one sensor logged them (its own shuffle)."""
    order = np.random.default_rng(seed).permutation(len(pair_ids))
    return pair_ids[order], values[order]


def join_pairs(left_ids: np.ndarray, right_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the left and right tables that share a pair id, in ascending id order.

    Pair ids must be unique on each side; a duplicated id is refused (it would pair one
    sample with two others)."""
    for side, ids in (("left", left_ids), ("right", right_ids)):
        values, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"join_pairs: the {side} table repeats pair ids {values[counts > 1][:5].tolist()}; "
                             f"each pair id must name one sample")
    common, left_rows, right_rows = np.intersect1d(left_ids, right_ids, assume_unique=True, return_indices=True)
    return left_rows, right_rows
