"""Masked editing: change one region of the start image and keep the rest (inpainting), or grow the
canvas and fill the new border (outpainting).

A mask is white where the image may change and black where it is kept. It acts in four places:
- the gradient on z is masked at the latent grid (`latent_weights`: a cell may change when any of
  its pixels may, and the weights fade out over `mask.feather` more cells, so the seam blends);
- the kept pixels are pulled toward the start image (`Edit.keep_loss`, `mask.keep_weight`): the
  changing cells next to the seam must not spill into the kept region through the decoder;
- CLIP sees the whole image, or only crops that overlap the region (`mask.cutouts`, cutouts.py);
- the written image takes its kept region from the original pixels, blended over `feather` cells
  inside the region (`mask.composite=pixels`), or as the latent decodes it (`latent`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import MAX_SIDE
from .errors import UserError

log = logging.getLogger(__name__)

FILLS = ("image", "random", "prior")  # mask.fill: how the region to change starts
COMPOSITES = ("pixels", "latent")  # mask.composite: where the written kept region comes from
CUTOUT_REGIONS = ("all", "inside")  # mask.cutouts: which crops CLIP sees
STARTS_TO_KEEP = ("image", "prior", "latent", "tokens")  # init modes whose start is a picture worth keeping


def is_editing(mask) -> bool:
    """Whether the config's `mask` section asks for an edit at all."""
    return bool(mask.image or mask.box is not None or mask.outpaint)


@dataclass
class Edit:
    """One masked edit on a canvas of `size` (width, height): what changes, and what is kept."""

    size: tuple[int, int]  # the canvas (outpainting: the start image plus the new border)
    inner: tuple[int, int, int, int]  # where the start image lies on the canvas: left, top, width, height
    change: torch.Tensor  # 1 × 1 × H × W: 1 where the image may change, 0 where it is kept
    latent: torch.Tensor  # 1 × 1 × h × w: the gradient's weight per latent cell, in [0, 1]
    blend: torch.Tensor  # 1 × 1 × H × W: the decoded image's share in the written image (composite=pixels)
    keep_weight: float
    composite_mode: str
    picture: torch.Tensor | None = None  # 1 × 3 × H × W: init.image on the canvas (init.mode=image: the start too)
    reference: torch.Tensor | None = None  # 1 or B × 3 × H × W: the pixels kept (set once the start is known)

    @property
    def cells(self) -> torch.Tensor:
        """1 × 1 × h × w booleans: the latent cells of the region itself (the feather left out)."""
        return self.latent >= 1

    @property
    def region(self) -> torch.Tensor:
        """H × W booleans, on the CPU: the pixels that may change (for `mask.cutouts=inside`)."""
        return self.change[0, 0].cpu() > 0.5

    def to(self, device: torch.device) -> Edit:
        moved = {name: getattr(self, name).to(device) if isinstance(getattr(self, name), torch.Tensor) else
                 getattr(self, name) for name in self.__dataclass_fields__}
        return Edit(**moved)

    def mask_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """A hook on z: the gradient, zero on the kept cells and fading in over the feather."""
        return grad * self.latent.to(grad.dtype)

    def fill(self, z: torch.Tensor, filler: torch.Tensor) -> torch.Tensor:
        """z with the region's cells taken from `filler` (random codes, the prior's draw)."""
        return torch.where(self.cells, filler, z)

    def keep_loss(self, image: torch.Tensor) -> torch.Tensor:
        """keep_weight · the mean squared difference from the reference over the kept pixels, per candidate."""
        return self.keep_weight * masked_mse(image, self.reference, 1 - self.change).sum()

    def composite(self, images: torch.Tensor) -> torch.Tensor:
        """What is written: the decoded images, their kept region from the original pixels (composite=pixels)."""
        if self.composite_mode == "latent":
            return images
        blend = self.blend.to(images)
        return self.reference.to(images) * (1 - blend) + images * blend


def plan_edit(config, size: tuple[int, int], factor: int, *, auto_size: bool = False) -> Edit | None:
    """The edit the config's `mask` section asks for, at the run's size; None for a plain run.

    `size` is the start image's size (with size=auto, the canvas the memory allows, the start image
    getting what the border leaves: config.size is set to that, so a repeat run draws the same).
    Records the mask file's sha256 in config.mask.sha256, and refuses a file that no longer matches.
    Every check happens here, before anything is written.
    """
    mask = config.mask
    if not is_editing(mask):
        return None
    if mask.outpaint and config.init.mode != "image":
        raise UserError(f"--outpaint grows the init image, and init.mode={config.init.mode} has none: "
                        "give --init-image PATH")
    if config.init.mode not in STARTS_TO_KEEP:
        raise UserError(f"a mask edits a start image, and init.mode={config.init.mode} has none: give "
                        "--init-image PATH (or init.mode=prior, latent or tokens)")
    borders = outpaint_borders(mask.outpaint, factor)
    canvas, inner = _canvas(size, borders, factor, auto_size)
    if auto_size and borders:
        config.size = [inner[2], inner[3]]  # recorded: the start image's size, as without size=auto
    wanted = wanted_region(mask, (inner[2], inner[3]))
    change = torch.ones(1, 1, canvas[1], canvas[0])
    change[..., inner[1]:inner[1] + inner[3], inner[0]:inner[0] + inner[2]] = wanted
    if not borders and bool((wanted > 0.5).all()):
        log.warning("the mask lets the whole image change: running as a plain run from the start image")
        return None
    picture = None
    if config.init.image:  # the pixels to keep (init.mode=image: also the start)
        from .outputs import load_image

        start = load_image(config.init.image, (inner[2], inner[3]))
        left, top, width, height = inner
        picture = F.pad(start, (left, canvas[0] - left - width, top, canvas[1] - top - height), mode="replicate")
    feather = int(mask.feather)
    return Edit(canvas, inner, change, latent_weights(change, factor, feather),
                inward_ramp(change, feather * factor), float(mask.keep_weight), mask.composite, picture)


def outpaint_borders(outpaint, factor: int) -> tuple[int, int, int, int] | None:
    """--outpaint LEFT TOP RIGHT BOTTOM rounded up to multiples of the VQGAN's factor (None: none)."""
    if not outpaint:
        return None
    return tuple(math.ceil(int(side) / factor) * factor for side in outpaint)


def _canvas(size: tuple[int, int], borders, factor: int, auto_size: bool):
    """(canvas size, the start image's box on it)."""
    if not borders:
        return size, (0, 0, *size)
    left, top, right, bottom = borders
    if auto_size:
        inner = (size[0] - left - right, size[1] - top - bottom)
        if min(inner) < factor:
            raise UserError(f"--outpaint {left} {top} {right} {bottom} leaves no room for the init image in the "
                            f"{size[0]}×{size[1]} that size=auto allows here: give smaller borders, or a size")
        return size, (left, top, *inner)
    canvas = (size[0] + left + right, size[1] + top + bottom)
    if max(canvas) > MAX_SIDE:
        raise UserError(f"--outpaint makes a {canvas[0]}×{canvas[1]} canvas, beyond {MAX_SIDE} px a side")
    return canvas, (left, top, *size)


def wanted_region(mask, size: tuple[int, int]) -> torch.Tensor:
    """H × W: 1 where the user's mask (file, box, or both: either) lets the start image change."""
    if not mask.image and mask.box is None:
        return torch.zeros(size[1], size[0])  # outpainting only: the start image is kept whole
    wanted = torch.zeros(size[1], size[0])
    if mask.image:
        from .models.download import sha256_of

        wanted = torch.maximum(wanted, read_mask(mask.image, size))
        digest = sha256_of(mask.image)
        if mask.sha256 and mask.sha256 != digest:
            raise UserError(f"the mask {mask.image} is not the file this run was made with (sha256 {digest[:12]}…, "
                            f"recorded {mask.sha256[:12]}…): restore it, or set mask.sha256=null")
        mask.sha256 = digest
    if mask.box is not None:
        wanted = torch.maximum(wanted, box_mask(list(mask.box), size))
    if mask.invert:
        wanted = 1 - wanted
    if not bool((wanted > 0.5).any()):
        raise UserError(f"the mask is all black: nothing may change (white = may change, black = keep)"
                        f"{'; drop --mask-invert' if mask.invert else '; did you mean --mask-invert?'}")
    return wanted


def read_mask(path: str, size: tuple[int, int]) -> torch.Tensor:
    """H × W of 0/1 from a mask file resized to size (width, height): its alpha where it has
    transparent pixels (painted strokes on a clear layer), else its grey levels; 1 above half."""
    from PIL import Image

    from .outputs import read_picture

    if Path(path).is_dir():
        raise UserError(f"mask {path} is a folder: give an image file (mask videos are for vqclip video restyle)")
    with read_picture(path, "mask") as img:
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
        alpha = img.convert("RGBA").getchannel("A") if has_alpha else None
        grey = alpha if alpha is not None and alpha.getextrema()[0] < 255 else img.convert("L")
        grey = grey.resize(tuple(size), Image.Resampling.BILINEAR) if tuple(size) != grey.size else grey
        levels = np.array(grey, dtype=np.uint8)
    return torch.from_numpy((levels >= 128).astype(np.float32))


def box_mask(box: list[float], size: tuple[int, int]) -> torch.Tensor:
    """H × W with ones inside the box X0 Y0 X1 Y1: fractions of the image when all are ≤ 1, else pixels."""
    width, height = size
    fractions = all(value <= 1 for value in box)
    if not fractions and any(value != int(value) for value in box):
        raise UserError(f"mask.box {box} mixes fractions and pixels: give four fractions from 0 to 1, or four "
                        "whole numbers of pixels")
    scale = (width, height, width, height) if fractions else (1, 1, 1, 1)
    x0, y0, x1, y1 = (round(value * factor) for value, factor in zip(box, scale))
    if x1 > width or y1 > height or x1 <= x0 or y1 <= y0:
        raise UserError(f"mask.box {box} lies outside the {width}×{height} image: give pixels within it, or "
                        "fractions from 0 to 1")
    wanted = torch.zeros(height, width)
    wanted[y0:y1, x0:x1] = 1
    return wanted


def latent_weights(change: torch.Tensor, factor: int, feather: int) -> torch.Tensor:
    """The gradient's weight per latent cell: 1 on a cell with any pixel to change, then 1 − k/(feather+1)
    on the cells k steps (8-neighbourhood) outside, 0 beyond."""
    cells = F.max_pool2d(change, factor)
    weights, grown = cells.clone(), cells
    for k in range(1, feather + 1):
        grown = F.max_pool2d(grown, 3, stride=1, padding=1)
        weights = torch.maximum(weights, grown * (1 - k / (feather + 1)))
    return weights


def inward_ramp(change: torch.Tensor, width: int) -> torch.Tensor:
    """0 on the kept pixels, rising over `width` pixels inside the region to 1: the composite's seam.
    The kept region stays exactly the original; the blend happens on pixels that may change."""
    ramp, eroded = change.clone(), change
    for _ in range(width):
        eroded = -F.max_pool2d(-eroded, 3, stride=1, padding=1)  # the image's own edge is no seam
        ramp = ramp + eroded
    return ramp / (width + 1)


def masked_mse(image: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean squared difference from `reference` over the pixels `weights` counts (0–1 each), per
    image: a masked edit's kept pixels, a hold's (vqclip.controls.hold)."""
    return ((image.float() - reference) ** 2 * weights).sum((1, 2, 3)) / (3 * weights.sum()).clamp(min=1)
