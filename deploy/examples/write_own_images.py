"""Write scikit-learn's digits as a user's own image folders, for `deploy/configs/own_images.yaml`.

    python deploy/examples/write_own_images.py        # -> data/own_images/{train,test,transfer}/<class>/*.png

Each digit becomes a 28x28 grey PNG: the 8x8 pixels enlarged to 20x20 and placed at a random
offset, so that position varies as in real photographs and a convolutional teacher has
something to gain over a dense one. One folder per class (`zero` .. `nine`); `train`
(teachers) and `test` are a stratified 75/25 split; `transfer` (the students') is 300 images of
train with every 3 left out, Hinton et al.'s (2015) experiment on images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from write_own_digits import arguments, digit_splits  # the same rows in each split as the Parquet example

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIDE, DIGIT = 28, 20


def image(pixels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    digit = Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).astype(np.uint8), "L")
    canvas = Image.new("L", (SIDE, SIDE))
    dx, dy = rng.integers(0, SIDE - DIGIT + 1, size=2)
    canvas.paste(digit.resize((DIGIT, DIGIT), Image.Resampling.BILINEAR), (int(dx), int(dy)))
    return canvas


def main() -> None:
    args = arguments("data/own_images")
    raw = load_digits()
    out = Path(args.out)
    for split, rows in digit_splits(raw.target, args.transfer_rows).items():
        for i in rows:
            folder = out / split / NAMES[raw.target[i]]
            folder.mkdir(parents=True, exist_ok=True)
            # the same digit gets the same offset in every split it is in: a row is one image
            image(raw.data[i], np.random.default_rng([1, int(i)])).save(folder / f"digit-{i}.png")
        print(f"{out / split}: {len(rows)} images")


if __name__ == "__main__":
    main()
