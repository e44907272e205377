"""Limited palettes: a loss that pulls each pixel toward its nearest palette colour, and indexed PNGs.

The colours are given (`palette.colours`, hex) or taken from a picture by k-means
(`palette.image`, `palette.size` of them). Distances are CIELAB ΔE (1976), where 10 is a
difference anyone sees and 2 about the least one can: the loss is the mean ΔE from each pixel to
its nearest colour, / 100, times a weight that rises over the first `palette.ramp` of the run so
that CLIP lays the picture out before the palette closes in. `palette.quantize` writes the final
image as an indexed PNG of exactly those colours (Floyd–Steinberg dithered with `palette.dither`).
docs/palettes.md has the figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from ..errors import UserError

MAX_COLOURS = 256  # what an indexed PNG holds
CLOSE = 10.0  # ΔE within which a pixel counts as of a palette colour (palette_share)


def parse_colour(text: str) -> tuple[float, float, float]:
    """'#e63946', 'e63946' or '#f00' → (r, g, b) in [0, 1]."""
    digits = str(text).strip().removeprefix("#")
    if not re.fullmatch(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}", digits):
        raise UserError(f"palette colour {text!r} is not a hex colour: write #RRGGBB (e.g. #e63946) or #RGB")
    if len(digits) == 3:
        digits = "".join(2 * digit for digit in digits)
    return tuple(int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4))


def hex_colour(rgb) -> str:
    return "#" + "".join(f"{round(float(channel) * 255):02x}" for channel in rgb)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels in dimension -3 (… × 3 × H × W or K × 3 × 1 × 1) → CIELAB (D65)."""
    from kornia.color import rgb_to_lab as kornia_rgb_to_lab

    return kornia_rgb_to_lab(rgb.float().clamp(0, 1))


def kmeans_colours(image: torch.Tensor, count: int, iterations: int = 30, samples: int = 20000) -> torch.Tensor:
    """`count` colours that stand for the pixels of `image` (3 × H × W): k-means in CIELAB, seeded
    from a fixed stream so that one picture always gives one palette. K × 3 sRGB in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    pixels = image.float().reshape(3, -1).T
    if len(pixels) > samples:
        pixels = pixels[torch.randperm(len(pixels), generator=generator)[:samples]]
    lab = rgb_to_lab(pixels.T[:, :, None]).squeeze(-1).T  # N × 3
    count = min(count, len(torch.unique(pixels, dim=0)))
    centres = lab[torch.randint(len(lab), (1,), generator=generator)]
    while len(centres) < count:  # k-means++: each new centre far from those chosen
        distance = torch.cdist(lab, centres).min(1).values ** 2
        centres = torch.cat([centres, lab[torch.multinomial(distance, 1, generator=generator)]])
    for _ in range(iterations):
        nearest = torch.cdist(lab, centres).argmin(1)
        for k in range(count):
            members = lab[nearest == k]
            if len(members):
                centres[k] = members.mean(0)
    nearest = torch.cdist(lab, centres).argmin(1)
    # Each colour is the mean of its pixels in sRGB, so that flat regions keep their exact colour.
    return torch.stack([pixels[nearest == k].mean(0) for k in range(count) if (nearest == k).any()])


@dataclass
class Palette:
    """The colours (K × 3 sRGB in [0, 1]) and how hard the run pulls toward them."""

    colours: torch.Tensor
    weight: float = 1.0
    ramp_steps: int = 0  # the weight rises linearly from 0 over these steps

    def to(self, device) -> Palette:
        return Palette(self.colours.to(device), self.weight, self.ramp_steps)

    def weight_at(self, step: int) -> float:
        return self.weight * min(1.0, (step + 1) / self.ramp_steps) if self.ramp_steps else self.weight

    def loss(self, image: torch.Tensor, step: int) -> torch.Tensor:
        """Σ over the batch of the mean ΔE/100 from each pixel to its nearest colour, weighted."""
        return self.weight_at(step) * nearest_distance(image, self.colours).mean((1, 2)).sum() / 100


def nearest_distance(image: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """ΔE from each pixel of B × 3 × H × W to its nearest colour: B × H × W."""
    lab = rgb_to_lab(image)
    targets = rgb_to_lab(colours[:, :, None, None].to(image.device))[:, :, 0, 0]  # K × 3
    squared = (lab[:, None] - targets[None, :, :, None, None]).pow(2).sum(2)  # B × K × H × W
    return (squared.min(1).values + 1e-6).sqrt()  # + ε: a finite gradient at a palette colour


def palette_share(image: torch.Tensor, colours: torch.Tensor, within: float = CLOSE) -> float:
    """The share of pixels within `within` ΔE of a palette colour."""
    with torch.no_grad():
        return float((nearest_distance(image.float(), colours) <= within).float().mean())


def palette_from_config(config: DictConfig, steps: int) -> Palette | None:
    """The run's palette, or None when it has none."""
    from ..outputs import load_image

    settings = config.palette
    if settings.colours:
        colours = torch.tensor([parse_colour(text) for text in settings.colours])
    elif settings.image:
        colours = kmeans_colours(load_image(settings.image, what="palette image")[0], int(settings.size))
    else:
        return None
    return Palette(colours, float(settings.weight), round(settings.ramp * steps))


def check_palette(settings: DictConfig) -> None:
    """The palette keys' one-line errors (config.validate calls it)."""
    if settings.colours and settings.image:
        raise UserError("give palette.colours or palette.image (--palette-from), not both")
    for text in settings.colours:
        parse_colour(text)
    if len(settings.colours) > MAX_COLOURS:
        raise UserError(f"palette.colours holds {len(settings.colours)} colours; an indexed PNG holds at most "
                        f"{MAX_COLOURS}")
    if not 2 <= settings.size <= MAX_COLOURS:
        raise UserError(f"palette.size is the number of colours taken from palette.image, from 2 to {MAX_COLOURS}, "
                        f"not {settings.size}")
    if not 0 <= settings.weight < float("inf"):
        raise UserError(f"palette.weight must be a finite number of 0 or more, not {settings.weight}")
    if not 0 <= settings.ramp <= 1:
        raise UserError(f"palette.ramp is the fraction of the run over which the weight rises, from 0 to 1, "
                        f"not {settings.ramp}")
    if (settings.quantize or settings.dither) and not (settings.colours or settings.image):
        raise UserError("palette.quantize and palette.dither need a palette: palette.colours=[...] or "
                        "--palette-from IMAGE")
    if settings.dither and not settings.quantize:
        raise UserError("palette.dither dithers the indexed PNG: add palette.quantize=true")


def quantized(image: torch.Tensor, colours: torch.Tensor, dither: bool):
    """A 3 × H × W image as an indexed PIL image of exactly `colours` (nearest in sRGB, as PIL's
    Floyd–Steinberg dithering measures it)."""
    import numpy as np
    from PIL import Image

    from ..outputs import to_pil

    levels = [round(float(value) * 255) for colour in colours for value in colour]
    reference = Image.new("P", (1, 1))
    reference.putpalette(levels + levels[:3] * (MAX_COLOURS - len(colours)))  # unused entries: the first colour
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    indices = np.array(to_pil(image).quantize(palette=reference, dither=mode))
    indices[indices >= len(colours)] = 0  # the padding entries are copies of the first colour
    indexed = Image.frombytes("P", indices.shape[::-1], indices.tobytes())
    indexed.putpalette(levels)  # only the palette's own colours are written
    return indexed
