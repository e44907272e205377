"""Merging a VQGAN's interchangeable flat codes, so that a prior learns shapes rather than code noise.

A VQGAN trained to use most of its codebook spends many codes on the same flat colour: the
shapes VQGAN draws a white background with codes 379, 143, 9 and 37 interchangeably, about 46
distinct codes per 64 px image of two flat colours. The encoder's choice among them is noise
that a prior must model token by token. Replacing each such code by one representative changes
the decoded image by a fraction of a decibel and leaves the prior only the structure to learn
(the shapes prior drew the right shape far more often: docs/experiments.md#2026-11-22--the-shapes-worlds-prior-merged-flat-codes-and-the-anchored-preset).

A code is *flat* when a grid filled with it decodes to a near-uniform image; flat codes whose
colours lie within `colour_distance` of each other form a group, represented by its flattest
member. A token is replaced only where its whole 3 × 3 neighbourhood belongs to its group, so
edges, where the choice of code shapes the boundary, keep the encoder's codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FlatCodes:
    group: torch.Tensor  # per code: its group's index, or -1 for a code that is not flat (int64, n_embed)
    representative: torch.Tensor  # per group: the code that stands for it (int64)

    @property
    def merged(self) -> int:
        """How many codes are folded into another one."""
        return int((self.group >= 0).sum()) - len(self.representative)


@torch.no_grad()
def find_flat_codes(vqgan, grid: int = 16, max_std: float = 0.03, colour_distance: float = 0.06,
                    batch_size: int = 64) -> FlatCodes:
    """Decode a `grid` × `grid` field of every code and group the codes that draw the same flat colour."""
    device = next(vqgan.parameters()).device
    codes = torch.arange(vqgan.n_embed, device=device)
    images = torch.cat([vqgan.decode(vqgan.tokens_to_z(chunk[:, None, None].expand(-1, grid, grid)))
                        for chunk in codes.split(batch_size)]).float().clamp(0, 1).cpu()
    colour = images.mean((2, 3))
    spread = images.std((2, 3)).amax(1)
    group = torch.full((len(codes),), -1, dtype=torch.int64)
    representatives = []
    for code in spread.argsort().tolist():  # flattest first: each group is named after its cleanest code
        if spread[code] >= max_std:
            break
        if group[code] >= 0:
            continue
        alike = (spread < max_std) & (group < 0) & ((colour - colour[code]).norm(dim=1) < colour_distance)
        group[alike] = len(representatives)
        representatives.append(code)
    return FlatCodes(group, torch.tensor(representatives, dtype=torch.int64))


def merge_flat_codes(tokens: torch.Tensor, flat: FlatCodes) -> torch.Tensor:
    """B × h × w token grids with every flat code inside its group's region replaced by the representative."""
    tokens = tokens.long()
    group = flat.group[tokens]
    padded = F.pad(group[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    height, width = tokens.shape[1:]
    inside = group >= 0
    for dy in range(3):
        for dx in range(3):
            inside &= padded[:, dy:dy + height, dx:dx + width] == group
    merged = tokens.clone()
    merged[inside] = flat.representative[group[inside]]
    return merged
