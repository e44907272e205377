"""The video commands as Python functions: animate, interpolate, restyle, resume.

Order of work, so that bad input costs nothing and leaves nothing: check the config (schedules,
counts, the output's extension), read the inputs (keys, the input video), load the models, and
only then create the run folder, make the frames and write the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..config import build_config, to_dict
from ..errors import UserError
from ..interrupt import Interrupted, stop_on_signals
from ..machine.threads import run_threads
from ..mask import is_editing
from ..outputs import environment_info, load_image
from ..paths import check_paths
from ..start import check_size
from .animation import animate_frames, check_timeline, motion_schedules
from .frames import output_kind, read_frames, write_video
from .interpolation import (
    check_interpolation,
    check_latent_keys,
    classify_keys,
    interpolate_frames,
    interpolation_mode,
)
from .restyling import check_restyle, mask_frames, restyle_frames
from .run_state import VideoJob, create_job, fixed_size, load_job
from .schedule import quote_schedule_overrides

PRODUCERS = {"animate": animate_frames, "interpolate": interpolate_frames, "restyle": restyle_frames}
DEFAULT_PRESETS = {"animate": "zoom", "interpolate": "morph", "restyle": "restyle"}


@dataclass
class VideoResult:
    frames: list[torch.Tensor]  # each 3 × H × W in [0, 1], in order
    fps: float
    output: Path  # the written video (.mp4, .gif) or frame folder
    run_dir: Path  # frames, latents, per-frame runs, config.yaml, job.json


def check_video_config(config: DictConfig) -> None:
    """Everything about the video settings that can be wrong, before any work is done."""
    video = config.video
    if config.tile:
        raise UserError("tile=true makes single pictures that wrap around (vqclip PROMPT --tile); videos are "
                        "not tiles: leave it out")
    if video.frames <= 0:
        raise UserError(f"--frames must be at least 1, not {video.frames}")
    if not 0 < video.fps < float("inf"):
        raise UserError(f"--fps must be a positive number of frames per second, not {video.fps}")
    for key in ("first_frame_steps", "steps_per_frame"):
        if video[key] <= 0:
            raise UserError(f"video.{key} must be at least 1, not {video[key]}")
    motion_schedules(config)
    check_timeline(config)
    check_interpolation(config)
    check_restyle(config)
    if config.output:
        output_kind(config.output)


def check_inputs(kind: str, inputs: list[str], config: DictConfig) -> tuple[tuple[int, int], float | None]:
    """Read and check the inputs before any work; returns the frames' (width, height) (the input
    video's, the image keys', else the config's size) and the input video's fps (None: no video,
    or its fps is unknown)."""
    check_paths(config, kind=kind, inputs=inputs)  # every file named, before anything is read or loaded
    if config.init.mode == "image":  # a file that is no picture fails here, not once frame 0 begins
        load_image(config.init.image, what="init image")
    if kind != "restyle":
        _check_not_restyle(kind, config)
    if kind == "animate":
        if inputs:
            raise UserError("animate takes prompts, not input files")
        if not config.prompts and not config.video.timeline and not config.schedule:
            raise UserError("animate needs a prompt: vqclip video animate 'a prompt' --frames N -o OUT")
        return fixed_size(config), None
    if kind == "restyle":
        if len(inputs) != 1:
            raise UserError("restyle takes one input video or frame folder")
        if not config.prompts and not config.video.timeline:
            raise UserError("restyle needs a prompt: vqclip video restyle INPUT 'a prompt' -o OUT")
    if kind == "restyle" or interpolation_mode(inputs) == "upconvert":
        frames, fps = read_frames(inputs[0])  # an unreadable video fails here, before anything is written
        if kind == "restyle":
            mask_frames(config, len(frames), tuple(reversed(frames[0].shape[-2:])))
        if kind == "interpolate" and len(frames) < 2:
            raise UserError(f"{inputs[0]} has one frame: up-conversion needs at least two")
        height, width = frames[0].shape[-2:]
        return (width, height), fps
    sizes = [key.size for key in classify_keys(inputs) if key.size]
    return (sizes[0] if sizes else fixed_size(config)), None


def _check_not_restyle(kind: str, config: DictConfig) -> None:
    """What only a restyle can use: a mask (the input's frames are what it keeps), the flow."""
    if config.video.flow:
        raise UserError(f"video.flow follows an input video's motion: it is for restyle, not {kind}")
    if is_editing(config.mask):
        raise UserError(f"a mask in a video is for restyle (the input's frames are what it keeps), not {kind}")


def fps_given(overrides: dict, dotlist: list[str] | None) -> bool:
    """Whether the caller chose the fps (--fps, video={"fps": ...} or video.fps=...), rather than
    leaving it to the preset."""
    video = overrides.get("video")
    return ((isinstance(video, dict) and video.get("fps") is not None) or "video.fps" in overrides
            or any(item.split("=", 1)[0].strip() == "video.fps" for item in dotlist or []))


def make_video(kind: str, inputs: list[str], config: DictConfig, models=None, *,
               input_fps: bool = False) -> VideoResult:
    """Check, load, create the run folder, make the frames, write the video.

    `input_fps`: write the video at the input video's fps (where it is known) instead of
    `video.fps`: restyle does, unless the caller set the fps."""
    from ..loading import load_models

    check_video_config(config)
    size, fps = check_inputs(kind, inputs, config)
    if input_fps and fps:
        config.video.fps = fps  # recorded in the run's config, so --resume writes the same
    models = models or load_models(config)
    check_size(size, models.vqgan.factor)  # the factor is known now; the run folder does not exist yet
    if kind == "interpolate" and interpolation_mode(inputs) == "keys":
        check_latent_keys(inputs, models.vqgan, size)
    with run_threads(config.threads, quiet=config.quiet) as plan:  # one count for every frame, recorded for --resume
        config.threads = plan.threads
        return _run(create_job(kind, inputs, config), models)


def resume(run_dir: str | Path, models=None, overrides: dict | None = None) -> VideoResult:
    """Continue a killed video run from its last finished frame (same frames as never stopping)."""
    from ..loading import load_models

    job = load_job(run_dir, overrides)
    check_video_config(job.config)
    check_inputs(job.kind, job.inputs, job.config)
    models = models or load_models(job.config)
    with run_threads(job.config.threads):
        return _run(job, models)


def _run(job: VideoJob, models) -> VideoResult:
    config = job.config
    metadata = {"kind": job.kind, "inputs": job.inputs, "config": to_dict(config), "seed": config.seed,
                "versions": environment_info()}
    try:
        with stop_on_signals() as job.stop:  # between frames; inside one, the frame's own run handles it
            frames = PRODUCERS[job.kind](job, models, metadata)
    except Interrupted as stopped:  # the frame's run saved its state; the video continues by frame
        raise Interrupted(f"{stopped.args[0].split(';')[0]}; continue the video with: "
                          f"vqclip video --resume {job.run_dir}") from None
    output = Path(config.output) if config.output else job.run_dir / "video.mp4"
    write_video(output, frames, config.video.fps, metadata)
    return VideoResult(frames, float(config.video.fps), output, job.run_dir)


def _config(kind: str, preset: str | None, overrides: dict, dotlist: list[str] | None) -> DictConfig:
    return build_config(preset or DEFAULT_PRESETS[kind], overrides, quote_schedule_overrides(dotlist or []))


def animate(prompt: str | list[str] | None = None, *, preset: str | None = None, output: str | None = None,
            models=None, dotlist: list[str] | None = None, **overrides) -> VideoResult:
    """`vqclip.video.animate("a red circle", preset="shapes-zoom", output="zoom.mp4", video={"frames": 8})`."""
    if prompt is not None:
        overrides["prompts"] = [prompt] if isinstance(prompt, str) else list(prompt)
    if output is not None:
        overrides["output"] = str(output)
    return make_video("animate", [], _config("animate", preset, overrides, dotlist), models)


def interpolate(keys: list[str], *, preset: str | None = None, output: str | None = None, models=None,
                dotlist: list[str] | None = None, **overrides) -> VideoResult:
    """`vqclip.video.interpolate(["red.png", "blue.png"], preset="shapes-morph", video={"between": 6})`;
    one video or frame folder instead of keys up-converts its frame rate."""
    if output is not None:
        overrides["output"] = str(output)
    return make_video("interpolate", [str(key) for key in keys], _config("interpolate", preset, overrides, dotlist),
                      models)


def restyle(input_video: str, prompt: str | list[str] | None = None, *, preset: str | None = None,
            output: str | None = None, models=None, dotlist: list[str] | None = None, **overrides) -> VideoResult:
    """`vqclip.video.restyle("clip.mp4", "a blue square", preset="shapes-zoom", output="styled.mp4")`.

    The result plays at the input's fps (where the input knows it) unless `video={"fps": ...}` or
    `dotlist=["video.fps=..."]` asks for another."""
    if prompt is not None:
        overrides["prompts"] = [prompt] if isinstance(prompt, str) else list(prompt)
    if output is not None:
        overrides["output"] = str(output)
    # A restyled clip plays at its input's pace unless the caller asks for another fps.
    return make_video("restyle", [str(input_video)], _config("restyle", preset, overrides, dotlist), models,
                      input_fps=not fps_given(overrides, dotlist))
