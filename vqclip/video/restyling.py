"""Restyle a video: each input frame starts its styled frame, so the content stays and the style moves.

Frame k starts from (1 − blend) · encode(source k) + blend · styled k−1 (the previous styled frame
carries the style over, which calms flicker), is pulled toward that start by the init anchor
(`init.weight`, anchor z0: mostly the source frame's latent), and is optimised toward the prompts.
`video.smoothing` adds an EMA of the styled latents on top.

With `video.flow` (OpenCV, vqclip/video/flow.py) the previous styled frame is moved along the
source's motion first: frame k starts from that warped picture where the flow sees a pixel in both
frames and from source k elsewhere, and its run holds the pixels seen in both toward the warped
picture (hold.weight = video.flow_weight). Wherever OpenCV is installed, flow or not, the video's
metadata gets its flicker.

With a mask (`mask.image`: one picture for every frame, or a mask video of the same length; or
`mask.box`) only the masked region is restyled: each frame's run keeps the source frame's pixels
elsewhere (vqclip/mask.py), and its kept cells start from the source frame alone.
"""

from __future__ import annotations

import functools

import torch

from .. import outputs
from ..errors import UserError
from ..mask import is_editing, plan_edit, wanted_region
from ..start import check_size
from .animation import chain_frames
from .frames import is_video_input, read_frames
from .interpolation import lerp
from .run_state import VideoJob, decode_latent, derive_config, encode_image


def check_restyle(config) -> None:
    if not 0 <= config.video.blend < 1:
        raise UserError(f"video.blend is the previous styled frame's share: keep it in [0, 1), not {config.video.blend}")
    if not 0 <= config.video.flow_weight < float("inf"):
        raise UserError(f"video.flow_weight must be a finite number of 0 or more, not {config.video.flow_weight}")
    if config.video.flow:
        from .flow import require_opencv

        require_opencv()


def mask_frames(config, count: int, size: tuple[int, int] | None = None) -> list[torch.Tensor] | None:
    """Frame k's mask picture when mask.image is a mask video or frame folder (None otherwise).
    Given the frames' `size`, a mask for every frame (a picture, a box) is checked against it too."""
    path = config.mask.image
    if not path or not is_video_input(path):
        if size is not None and is_editing(config.mask):
            wanted_region(config.mask, size)  # all black, a box outside the frame: said before any work
        return None
    masks, _ = read_frames(path)
    if len(masks) != count:
        raise UserError(f"the mask video {path} has {len(masks)} frames and the input {count}: give a mask video "
                        "of the same length, or one mask picture for every frame")
    for index, mask in enumerate(masks):  # each frame's run would refuse it; say so before any work
        changes = (mask.mean(0) >= 0.5) != bool(config.mask.invert)
        if not changes.any():
            raise UserError(f"frame {index} of the mask video {path} is all {'white' if config.mask.invert else 'black'}"
                            ": nothing may change there (white = may change, black = keep)")
    return masks


def restyle_frames(job: VideoJob, models, metadata: dict) -> list[torch.Tensor]:
    """Make (or, resuming, finish) the restyled frames; returns them all, in order."""
    sources, _ = read_frames(job.inputs[0])
    height, width = sources[0].shape[-2:]
    check_size((width, height), models.vqgan.factor)
    config, blend = job.config, job.config.video.blend
    masks = mask_frames(config, len(sources))
    masked = is_editing(config.mask)
    flow = config.video.flow
    work = job.run_dir / "frames"

    def frame_changes(frame: int) -> dict:
        """Frame k's run keeps the pixels of source k (init.image), under its own mask; with the
        flow, it holds what `start` warped."""
        folder = work / f"{frame:05d}"
        outputs.save_png(folder / "source.png", sources[frame], {"frame": frame})
        changes = {"init.image": str(folder / "source.png")}
        if masks is not None:
            outputs.save_png(folder / "mask.png", masks[frame], {"frame": frame})
            changes.update({"mask.image": str(folder / "mask.png"), "mask.sha256": None})
        if flow and frame > 0:
            changes.update({"hold.image": str(folder / "warped.png"), "hold.mask": str(folder / "seen.png"),
                            "hold.weight": config.video.flow_weight})
        return changes

    @functools.lru_cache(maxsize=2)
    def edit(frame: int):
        frame_config = derive_config(config, {"init.mode": "latent", **frame_changes(frame)})
        made = plan_edit(frame_config, (width, height), models.vqgan.factor)
        if made is not None:
            made.reference = made.picture
        return made

    def start(frame: int, previous: torch.Tensor | None, values: dict) -> torch.Tensor:
        source = encode_image(models.vqgan, sources[frame], models.device)
        if previous is None:
            return source
        if flow:
            styled = encode_image(models.vqgan, flow_start(frame, previous), models.device)
        else:
            styled = lerp(source, previous, blend)
        region = edit(frame) if masked else None
        return styled if region is None else torch.where(region.cells.to(source.device), styled, source)

    def flow_start(frame: int, previous: torch.Tensor) -> torch.Tensor:
        """The previous styled frame moved along the source's motion where both frames see a pixel,
        source k elsewhere; the warped picture and the seen pixels go beside the frame for its hold."""
        from .flow import motion, warp

        back, seen = motion(sources[frame], sources[frame - 1])
        warped = warp(decode_latent(models.vqgan, previous).cpu(), back).clamp(0, 1)
        folder = work / f"{frame:05d}"
        outputs.save_png(folder / "warped.png", warped, {"frame": frame})
        outputs.save_png(folder / "seen.png", seen.expand(3, -1, -1), {"frame": frame})
        source = sources[frame].float().cpu()
        return source + (warped - source) * seen * blend

    def present(frame: int, picture: torch.Tensor) -> torch.Tensor:
        region = edit(frame)
        return picture if region is None else region.composite(picture[None].cpu())[0]

    frames = chain_frames(job, models, metadata, len(sources), (width, height), start,
                          frame_changes if masked or flow else None, present if masked else None)
    from .flow import flicker, has_opencv

    if flow or has_opencv():  # measured with or without the flow, so the two can be compared
        metadata["flicker"] = round(flicker(frames, sources), 5)
    return frames
