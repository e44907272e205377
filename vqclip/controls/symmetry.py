"""Mirror symmetry (symmetry=horizontal|vertical|both): a loss between the image and its mirror images.

horizontal: the left half mirrors the right (a face, a butterfly); vertical: the top mirrors the
bottom (a reflection in water); both: all four quarters. The loss is symmetry_weight times the mean
absolute difference, which pulls every pixel with the same strength however small the difference
left, where a squared loss would stall near symmetry. Making the latent itself symmetric was
tried and did worse (docs/experiments.md); docs/palettes-and-symmetry.md has the figures.
"""

from __future__ import annotations

import torch

SYMMETRIES = ("none", "horizontal", "vertical", "both")
FLIPPED = {"none": (), "horizontal": ((-1,),), "vertical": ((-2,),), "both": ((-1,), (-2,))}


def mirror_difference(image: torch.Tensor, symmetry: str) -> torch.Tensor:
    """The mean absolute difference between B × 3 × H × W images and their mirror images, per image
    (B values; the mean over the mirrors for `both`)."""
    flips = FLIPPED[symmetry]
    if not flips:
        return image.new_zeros(image.shape[0])
    return sum((image - image.flip(dims)).abs().mean((1, 2, 3)) for dims in flips) / len(flips)

