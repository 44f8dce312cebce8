"""Write scikit-learn's digits as a user's own Parquet files, for `deploy/configs/own_data.yaml`.

    python deploy/examples/write_own_digits.py        # -> data/own_digits/{train,test,transfer}.parquet

`train` (teachers) and `test` are a stratified 75/25 split; `transfer` (the students') is 300
rows of train with every 3 left out: Hinton et al.'s (2015) experiment, where a student that
never sees a 3 learns to recognise 3s from the teachers' soft targets on the other digits.
Each row has a stable id, the 64 pixels in [0, 1] as one list column, the digit, and a task
(the digit // 2: the split-digits tasks that continual runs and route weighting read).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits

LEFT_OUT = 3


def digit_splits(y: np.ndarray, transfer_rows: int) -> dict[str, np.ndarray]:
    """The rows of `train` and `test` (stratified 75/25) and of `transfer` (the first
    `transfer_rows` of train that are not a 3)."""
    rng = np.random.default_rng(0)
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round((y == c).sum() / 4)]
                                   for c in range(10)]))
    train = rng.permutation(np.setdiff1d(np.arange(len(y)), test))
    return {"train": train, "test": test, "transfer": np.array([i for i in train if y[i] != LEFT_OUT][:transfer_rows])}


def arguments(default_out: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--transfer-rows", type=int, default=300)
    return parser.parse_args()


def main() -> None:
    args = arguments("data/own_digits")
    raw = load_digits()
    x, y = (raw.data / 16.0).astype(np.float32), raw.target.astype(np.int64)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in digit_splits(y, args.transfer_rows).items():
        table = pa.table({"id": [f"digit-{i}" for i in rows], "pixels": [x[i].tolist() for i in rows],
                          "digit": y[rows], "task": y[rows] // 2})
        pq.write_table(table, out / f"{name}.parquet")
        print(f"{out / name}.parquet: {len(rows)} rows")


if __name__ == "__main__":
    main()
