"""Pixels held toward a picture (hold.image, hold.mask, hold.weight): a loss, not a constraint.

Where a masked edit freezes what it keeps, a hold only pulls: weight · the mean squared difference
from the picture, each pixel counted by the mask's grey level. A restyle with video.flow sets it for
each frame, holding the pixels the optical flow sees in both frames toward the previous styled
frame moved along the flow (vqclip/video/flow.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ..mask import masked_mse


class Hold:
    """image → weight · Σ mask · (image − picture)² / (3 · Σ mask), per batch item, summed."""

    def __init__(self, picture: torch.Tensor, mask: torch.Tensor, weight: float):
        self.picture, self.mask, self.weight = picture, mask, weight  # 1 × 3 × H × W, 1 × 1 × H × W

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        picture, mask = self.picture.to(image.device), self.mask.to(image.device)
        if picture.shape[-2:] != image.shape[-2:]:  # size=auto's probes judge other sizes
            picture = F.interpolate(picture, image.shape[-2:], mode="bilinear", align_corners=False)
            mask = F.interpolate(mask, image.shape[-2:], mode="bilinear", align_corners=False)
        return self.weight * masked_mse(image, picture, mask).sum()


def hold_from_config(config: DictConfig) -> Hold | None:
    """The run's hold, or None when it has none (no picture, or weight 0)."""
    from ..outputs import load_image

    settings = config.hold
    if not settings.image or not settings.weight:
        return None
    picture = load_image(settings.image, what="hold image")
    size = (picture.shape[-1], picture.shape[-2])
    mask = load_image(settings.mask, size, what="hold mask").mean(1, keepdim=True) if settings.mask \
        else torch.ones_like(picture[:, :1])
    return Hold(picture, mask, float(settings.weight))
