"""`vqclip data digits OUT`: real handwriting nobody here drew, offline, as a captioned folder.

scikit-learn ships the UCI handwritten digits (`sklearn.datasets.load_digits`: 1,797 images of
8 × 8 pixels in 17 grey levels, written by 43 people). They are written white on black, scaled up
to 32 × 32 (bicubic), as OUT/train/ and OUT/held-out/ in the `.png` + same-name `.txt` layout, with
captions that name the digit in a few ways ("the digit 7", "a handwritten seven", ...), and
OUT/labels.csv (split, file, digit) for judging what a model draws. The held-out split is fixed:
every fifth image of scikit-learn's order (359 images); the other 1,438 train.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..atomic import atomic_write_text
from ..data.pairs import write_pair
from ..errors import UserError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("the digit {digit}", "a handwritten {word}", "the number {word}", "a handwritten digit {digit}")
HELD_OUT_EVERY = 5
SIZE = 32


def caption(digit: int, index: int) -> str:
    """The caption of image `index`: the templates take turns, so every phrasing meets every digit."""
    return TEMPLATES[index % len(TEMPLATES)].format(digit=digit, word=WORDS[digit])


def split_of(index: int) -> str:
    return "held-out" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"


def load_digits():
    """(images 1797 × 8 × 8 in 0..16, digits) from scikit-learn, or a UserError saying how to get it."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        # the data and the digit judge (`vqclip digits eval`) both come here: name no one command
        raise UserError("the handwritten digits come from scikit-learn, which is not installed: "
                        "pip install 'vqclip[digits]'") from None
    bunch = sklearn_digits()
    return bunch.images, [int(t) for t in bunch.target]


def picture(pixels, size: int = SIZE):
    """One digit (8 × 8 in 0..16) as the RGB image the data set holds: white on black, scaled up."""
    import numpy as np
    from PIL import Image

    grey = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8), mode="L")
    return grey.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def write_digits(out: str | Path, size: int = SIZE) -> dict:
    """Write the digits under OUT; returns {split: count}. Each file is written atomically."""
    if size < 8:
        raise UserError(f"--size must be at least 8 (the digits are 8 × 8), not {size}")
    out = Path(out)
    images, digits = load_digits()
    counts = {"train": 0, "held-out": 0}
    rows = []
    for index, (pixels, digit) in enumerate(zip(images, digits)):
        split = split_of(index)
        name = f"{index:04d}"
        write_pair(out / split, name, picture(pixels, size), caption(digit, index))
        rows.append((split, f"{split}/{name}.png", digit))
        counts[split] += 1
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("split", "file", "digit"))
    writer.writerows(rows)
    atomic_write_text(out / "labels.csv", text.getvalue())
    return counts
