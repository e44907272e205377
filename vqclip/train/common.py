"""What the recipes share besides their loop (loop.py): the data, a world drawn on the fly, the held-out
split and the sample grids."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data.images import ImageSet, load_images
from ..errors import UserError

log = logging.getLogger(__name__)


WORLDS = {"shapes": "vqclip.shapes.data"}  # DATA names a world: write ./shapes for a folder of that name


def world_named(data: str | Path, held_out=None, template=None):
    """The world module DATA names (drawn on the fly), or None when DATA is a folder or list."""
    if str(data) not in WORLDS:
        return None
    if held_out is not None or template is not None:
        raise UserError(f"the {data} world draws its own held-out images and captions: leave out --held-out and "
                        "--template (or write the world as a folder first: vqclip data shapes OUT)")
    from importlib import import_module

    return import_module(WORLDS[str(data)])


def open_vqgan(spec: str, device="cpu"):
    """A VQGAN a recipe uses (the prior writes its tokens, the CLIP learns from its reconstructions):
    a folder from `vqclip train vqgan`, or a VQGAN name."""
    from ..models.registry import VQGANS, load_vqgan_from_config
    from ..models.vqgan import load_vqgan

    folder = Path(spec)
    if (folder / "vqgan.yaml").is_file():
        return load_vqgan(folder / "vqgan.yaml", folder / "vqgan.safetensors", device)
    if spec in VQGANS:
        return load_vqgan_from_config({"name": spec}, device, progress=False)
    raise UserError(f"--vqgan {spec!r} is neither a folder with vqgan.yaml (from vqclip train vqgan) nor a VQGAN "
                    f"name ({', '.join(VQGANS)})")


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
