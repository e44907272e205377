"""Seamless tiles (tile=true): images whose right edge runs on into their left and bottom into top.

Three things make one. The decoder's padded convolutions pad circularly, so that the decoder maps a
latent on a torus to an image on a torus: decoding a latent rolled by k codes gives the image
rolled by k · factor pixels (taming's upsampling, attention and GroupNorm all commute with a
roll). The cutouts wrap: each step rolls the image by a random offset before cutting it
(vqclip.cutouts), so that CLIP judges the seams as often as any other place. The total
variation counts the steps across the wrap edge. A drawing to start from (the prior's) is rolled
so that its quietest code lines lie on the edges: a shape the prior drew across one stays whole.
docs/tiles.md has the figures.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


@contextlib.contextmanager
def circular_padding(*models: nn.Module):
    """Within the block, every padded convolution of `models` pads circularly; then as before.

    The models are switched in place (a preloaded model serves the next run unchanged), for the
    whole run: checkpointed decoding recomputes in the backward pass, which must pad the same way.
    """
    convolutions = [module for model in models for module in model.modules() if _padded(module)]
    before = [module.padding_mode for module in convolutions]
    for module in convolutions:
        module.padding_mode = "circular"
    try:
        yield
    finally:
        for module, mode in zip(convolutions, before):
            module.padding_mode = mode


def _padded(module: nn.Module) -> bool:
    padding = getattr(module, "padding", 0)
    return hasattr(module, "padding_mode") and any(side != 0 for side in (
        padding if isinstance(padding, tuple) else (padding,)))


def roll_to_quiet_edges(z: torch.Tensor, vqgan) -> torch.Tensor:
    """Each latent of B × C × h × w rolled by the fewest whole codes that put the wrap edges on
    code boundaries where its picture hardly changes (a drawing on a background: between the
    background's codes). A drawing clear of the edges stays where it is."""
    with torch.no_grad(), circular_padding(vqgan):
        pictures = vqgan.decode(vqgan.quantize(z)).float()
    rolled = []
    for latent, picture in zip(z, pictures):
        # the step into every code's first column (row): index 0 is the wrap edge itself
        columns = _nearest_quiet((picture - picture.roll(1, -1)).abs().mean((0, 1))[::vqgan.factor])
        rows = _nearest_quiet((picture - picture.roll(1, -2)).abs().mean((0, 2))[::vqgan.factor])
        rolled.append(latent.roll((-rows, -columns), (-2, -1)))
    return torch.stack(rolled)


QUIET = 0.2  # a boundary is quiet when its step is within this share of the mean step of the quietest


def _nearest_quiet(steps: torch.Tensor) -> int:
    """The boundary nearest the wrap edge (index 0, either way round) whose step is within QUIET
    of the mean boundary step above the quietest one's."""
    quiet = steps <= steps.min() + QUIET * steps.mean()
    distance = torch.minimum(torch.arange(len(steps)), len(steps) - torch.arange(len(steps)))
    return int(torch.where(quiet, distance, len(steps)).argmin())


def random_roll(image: torch.Tensor, generator: torch.Generator | None,
                region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The image (and a mask's region) rolled by a random offset: wrapped cutouts are the plain
    cutouts of this."""
    height, width = image.shape[-2:]
    device = generator.device if generator is not None else torch.device("cpu")
    shift = torch.rand(2, generator=generator, device=device, dtype=torch.float64).cpu()
    dy, dx = int(shift[0] * height) % height, int(shift[1] * width) % width
    rolled = torch.roll(image, (dy, dx), (-2, -1))
    return rolled, torch.roll(region, (dy, dx), (-2, -1)) if region is not None else None


def tiled(image: torch.Tensor, times: int = 3) -> torch.Tensor:
    """`times` × `times` copies of a 3 × H × W image side by side: the preview that shows the seams."""
    return image.repeat(1, times, times)


def seam_ratio(image: torch.Tensor, period: int = 1) -> float:
    """The mean absolute step across the wrap edges over the mean step between neighbouring pixels
    inside (both directions): about 1 for a seamless tile, several times that for a plain image.

    `period` (a decoder's factor): only the inside steps at the same place in the code grid count,
    the steps between one code's pixels and the next code's. The wrap edge is such a step, and a
    decoder with little texture (random weights) changes far more there than within a code.
    """
    image = image.float()
    inside = ((image[..., :, period::period] - image[..., :, period - 1:-1:period]).abs().mean()
              + (image[..., period::period, :] - image[..., period - 1:-1:period, :]).abs().mean())
    wrap = (image[..., :, 0] - image[..., :, -1]).abs().mean() + (image[..., 0, :] - image[..., -1, :]).abs().mean()
    return float(wrap / inside.clamp_min(1e-12))
