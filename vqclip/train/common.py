"""What the general recipes share beyond vqclip/training.py: their data, held-out split and sample grids."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data.images import ImageSet, load_images
from ..errors import UserError

log = logging.getLogger(__name__)


def training_data(source: str | Path, size: int, *, held_out: str | Path | None = None, held_out_count: int = 0,
                  template: str | None = None, progress: bool = True) -> tuple[ImageSet, ImageSet, dict]:
    """(training images, held-out images, data report) at `size`.

    The held-out images come from `held_out` (another folder or list) if given; otherwise
    `held_out_count` images, spread evenly over the data, are kept out of training. With neither,
    the figures are measured on the first images of the training data, and the report says so."""
    data = load_images(source, size, template=template, progress=progress)
    report = {"data": str(source), **data.report()}
    warn_skipped(source, data)
    if held_out is not None:
        held = load_images(held_out, size, template=template, progress=progress)
        warn_skipped(held_out, held)
        return data, held, {**report, "held_out": {"source": str(held_out), **held.report()}}
    count = min(held_out_count, len(data) // 5)
    if count == 0:
        first = list(range(min(64, len(data))))
        return data, data.subset(first), {**report, "held_out": {"source": "the first training images",
                                                                 "images": len(first)}}
    chosen = sorted({round((i + 0.5) * len(data) / count) for i in range(count)} - {len(data)})
    rest = sorted(set(range(len(data))) - set(chosen))
    return (data.subset(rest), data.subset(chosen),
            {**report, "images": len(rest), "held_out": {"source": "spread over the data", "images": len(chosen)}})


def warn_skipped(source, images: ImageSet) -> None:
    if images.skipped:
        log.warning("%s: skipped %d unreadable image(s), e.g. %s", source, len(images.skipped), images.skipped[0][1])


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random size×size crop of each image (the networks are convolutional: they work at any size)."""
    if size <= 0 or size >= images.shape[-1]:
        return images
    offsets = torch.randint(images.shape[-1] - size + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([image[:, y:y + size, x:x + size] for image, (y, x) in zip(images, offsets)])


def save_grid(path: Path, rows: list[torch.Tensor], metadata: dict) -> None:
    """Rows of images (each B × 3 × H × W in [0, 1], the same B) as one PNG, 2 px apart."""
    from ..outputs import save_png

    gap = 2
    rows = [row.detach().float().cpu().clamp(0, 1) for row in rows]
    count, height, width = rows[0].shape[0], rows[0].shape[-2], rows[0].shape[-1]
    grid = torch.ones(3, len(rows) * (height + gap) - gap, count * (width + gap) - gap)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[:, r * (height + gap):r * (height + gap) + height, c * (width + gap):c * (width + gap) + width] = image
    save_png(path, grid, metadata)


def check_positive(config, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise UserError(f"{name} must be at least 1, not {getattr(config, name)}")


def stored_settings(path: Path) -> dict | None:
    """The settings stored in the training state file `path` (a recipe's `config`, the prior's `train`),
    read without loading the weights; None when there are none."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state.get("config", state.get("train"))


def check_same_settings(path: Path, config: dict) -> None:
    """Before `--resume` loads the state in `path`: a UserError naming the first setting of `config` that
    differs from the stored run's (a different architecture would otherwise fail inside load_state_dict)."""
    stored = stored_settings(path) or {}
    for key, new in config.items():
        if key in stored and stored[key] != new:
            raise UserError(f"{key}={new} differs from {key}={stored[key]} stored in {path}: leave {key} out "
                            "to continue that run, or train into another --out")
    if stored.keys() != config.keys():
        raise UserError(f"{path} was written by another version of this recipe: train into another --out")
