"""The digit judge: which digit an image shows, by a classifier of real handwriting.

The classifier is scikit-learn's SVC (RBF kernel) fitted on the 359 held-out digits of
`vqclip data digits` (every fifth of scikit-learn's 1,797), which no shipped model trained on.
An image is brought to what the data was before `vqclip data digits` scaled it up: grey, 8 × 8
(area average), 0–16 levels. The fit takes well under a second, so it is made on first use and kept.
"""

from __future__ import annotations

import functools

import numpy as np

from .data import HELD_OUT_EVERY, load_digits

LEVELS = 16
GAMMA, C = 0.0005, 10.0  # chosen on the data: the best held-out → train-split accuracy of a small grid


def held_out_mask(count: int) -> np.ndarray:
    return np.arange(count) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


@functools.lru_cache(maxsize=1)
def classifier():
    """The SVC fitted on the held-out digits (needs scikit-learn: pip install 'vqclip[digits]')."""
    images, digits = load_digits()  # first: without scikit-learn it says how to install it
    from sklearn.svm import SVC

    mask = held_out_mask(len(images))
    return SVC(gamma=GAMMA, C=C).fit(images[mask].reshape(mask.sum(), -1), np.asarray(digits)[mask])


def to_levels(image) -> np.ndarray:
    """Any image (PIL, a [3, H, W] / [1, 3, H, W] tensor in [0, 1], an HWC array) → 8 × 8 in 0..16."""
    from PIL import Image

    from ..shapes.judge import to_rgb_array

    grey = Image.fromarray(to_rgb_array(image).round().astype(np.uint8)).convert("L")
    small = np.asarray(grey.resize((8, 8), Image.Resampling.BOX), dtype=np.float64)
    return (small * LEVELS / 255).round()


def judge(images) -> list[int]:
    """The digit each image shows (a list of images, or a [N, 3, H, W] tensor)."""
    if len(images) == 0:
        return []
    rows = np.stack([to_levels(image).ravel() for image in images])
    return [int(d) for d in classifier().predict(rows)]


def accuracy_on_the_data() -> dict:
    """How well the judge reads real digits: on the 1,438 training digits (never fitted on)."""
    images, digits = load_digits()
    mask = ~held_out_mask(len(images))
    predicted = classifier().predict(images[mask].reshape(mask.sum(), -1))
    return {"train_split_accuracy": round(float((predicted == np.asarray(digits)[mask]).mean()), 4),
            "images": int(mask.sum())}
