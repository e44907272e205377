"""Helpers for the video tests: drawn keys and clips from the shapes world, and its models loaded once."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from vqclip.shapes.world import Scene, draw, to_tensor

# Few steps, few frames: each end-to-end test takes seconds on two CPU cores.
TINY = {"steps": 3, "seed": 5, "quiet": True, "cutn": 4}


def load_shapes_models():
    """The shapes world's VQGAN, CLIP and prior on the CPU (a test module wraps this as its fixture)."""
    from vqclip.config import build_config
    from vqclip.generation import load_models

    return load_models(build_config("shapes"), torch.device("cpu"))


def draw_key(path: Path, shape: str, colour: str, background: str = "white", size: int = 64,
             x: float = 0.5, y: float = 0.5) -> Path:
    Image.fromarray(draw(Scene(shape, colour, background, 0.6, x, y), size=size)).save(path)
    return path


def moving_circle(count: int, size: int = 64) -> list[torch.Tensor]:
    """A red circle sliding right on white: frames 3 × size × size in [0, 1]."""
    return [to_tensor(draw(Scene("circle", "red", "white", 0.5, 0.3 + 0.4 * i / max(count - 1, 1), 0.5), size=size))
            for i in range(count)]


def write_clip(path: Path, count: int, fps: float = 8.0) -> Path:
    from vqclip.video.frames import write_video

    return write_video(path, moving_circle(count), fps, {"test": "clip"})
