"""Restyle a video: each input frame starts its styled frame, so the content stays and the style moves.

Frame k starts from (1 − blend) · encode(source k) + blend · styled k−1 (the previous styled frame
carries the style over, which calms flicker), is pulled toward that start by the init anchor
(`init.weight`, anchor z0: mostly the source frame's latent), and is optimised toward the prompts.
`video.smoothing` adds an EMA of the styled latents on top.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..init import check_size
from .animation import chain_frames
from .frames import read_frames
from .interpolation import lerp
from .run_state import VideoJob, encode_image


def check_restyle(config) -> None:
    if not 0 <= config.video.blend < 1:
        raise UserError(f"video.blend is the previous styled frame's share: keep it in [0, 1), not {config.video.blend}")


def restyle_frames(job: VideoJob, models, metadata: dict) -> list[torch.Tensor]:
    """Make (or, resuming, finish) the restyled frames; returns them all, in order."""
    sources, _ = read_frames(job.inputs[0])
    height, width = sources[0].shape[-2:]
    check_size((width, height), models.vqgan.factor)
    blend = job.config.video.blend

    def start(frame: int, previous: torch.Tensor | None, values: dict) -> torch.Tensor:
        source = encode_image(models.vqgan, sources[frame], models.device)
        return source if previous is None else lerp(source, previous, blend)

    return chain_frames(job, models, metadata, len(sources), (width, height), start)
