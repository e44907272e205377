"""Optical flow for restyled videos (video.flow=true), from OpenCV: no downloaded weights.

Frame k's styled picture should be frame k−1's, moved as the source moved. The flow from source
frame k back to k−1 says where each of frame k's pixels was; warping the previous styled frame
along it gives frame k's start, and the pixels visible in both frames (those whose flow back and
forth returns to where it began) are held toward that warped picture while CLIP restyles the
rest. `flicker` measures the result with the same flow: the mean change between consecutive output
frames along the source's motion, on the pixels visible in both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

VISIBLE_WITHIN = 1.0  # px: a pixel whose flow there and back misses by more is occluded or uncertain


def has_opencv() -> bool:
    import importlib.util

    return importlib.util.find_spec("cv2") is not None


def require_opencv():
    """cv2, or a one-line error that says how to install it."""
    try:
        import cv2
    except ImportError:
        raise UserError("video.flow needs OpenCV: pip install 'vqclip[flow]' (opencv-python-headless)") from None
    return cv2


def _grey(picture: torch.Tensor) -> np.ndarray:
    """3 × H × W in [0, 1] → H × W uint8 luminance."""
    weights = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    return (picture.float().cpu().clamp(0, 1) * weights).sum(0).mul(255).round().to(torch.uint8).numpy()


def optical_flow(to: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
    """H × W × 2 (dx, dy): pixel (x, y) of picture `to` is at (x + dx, y + dy) in picture `back`.

    Farnebäck's dense flow, single-threaded so that the same frames give the same flow on any
    machine, busy or not.
    """
    cv2 = require_opencv()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        flow = cv2.calcOpticalFlowFarneback(_grey(to), _grey(back), None, pyr_scale=0.5, levels=3, winsize=15,
                                            iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    finally:
        cv2.setNumThreads(threads)
    return torch.from_numpy(flow)


def warp(picture: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Picture (C × H × W) sampled at each pixel plus its flow: the picture moved onto the other frame."""
    height, width = picture.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    x = (xs + flow[..., 0]) * 2 / (width - 1) - 1
    y = (ys + flow[..., 1]) * 2 / (height - 1) - 1
    grid = torch.stack([x, y], -1)[None].to(picture.device)
    return F.grid_sample(picture[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def visible(flow_back: torch.Tensor, flow_forth: torch.Tensor) -> torch.Tensor:
    """H × W, 1 where a pixel's flow back and then forth returns within VISIBLE_WITHIN px, else 0."""
    returned = flow_back + warp(flow_forth.permute(2, 0, 1), flow_back).permute(1, 2, 0)
    return (returned.norm(dim=-1) <= VISIBLE_WITHIN).float()


def motion(source: torch.Tensor, previous_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flow from `source` back to `previous_source`, the pixels visible in both)."""
    back = optical_flow(source, previous_source)
    return back, visible(back, optical_flow(previous_source, source))


def frame_changes(frames: list[torch.Tensor], sources: list[torch.Tensor]) -> list[float]:
    """For each frame after the first: the mean absolute change (0–1) from the frame before, moved
    along the sources' motion, on the pixels visible in both."""
    changes = []
    for k in range(1, len(frames)):
        back, seen = motion(sources[k], sources[k - 1])
        change = (frames[k].float().cpu() - warp(frames[k - 1].cpu(), back)).abs().mean(0)
        changes.append(float((change * seen).sum() / seen.sum().clamp(min=1)))
    return changes


def flicker(frames: list[torch.Tensor], sources: list[torch.Tensor]) -> float:
    """The mean of `frame_changes`: what a viewer sees as flicker."""
    changes = frame_changes(frames, sources)
    return sum(changes) / len(changes) if changes else 0.0
