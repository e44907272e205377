"""The `video` job kind: `vqclip video animate|interpolate|restyle` as a batch job.

```yaml
jobs:
  - {kind: video, prompt: "a red circle", preset: shapes-zoom, frames: 12}
  - {kind: video, command: interpolate, keys: [red.png, blue.png], preset: shapes-morph, between: 6}
  - {kind: video, command: restyle, input: clip.mp4, prompt: "a blue square", format: gif}
```

The keys are the command line's: `command` (default animate), `keys` (interpolate) or `input`
(restyle), the flags `frames`, `fps`, `between`, `method`, `ease`, `steps_per_frame`, `guided`
(vqclip.config.FLAG_KEYS), and any config key. The video is written into the job's folder as
video.mp4 (or .gif); the contact sheet shows its first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, unknown_choice
from .generate_kind import config_for_job, generate_config_layers, model_key
from .kinds import JobOutput, ModelCache, register_kind

COMMANDS = ("animate", "interpolate", "restyle")
FORMATS = ("mp4", "gif")


@dataclass(frozen=True)
class VideoLayers:
    """A video job's settings, sorted into what `make_video` takes and the config's layers."""

    command: str  # animate | interpolate | restyle
    inputs: list[str]  # interpolate: the keys; restyle: the video; animate: none
    video_format: str  # mp4 | gif
    preset: str
    overrides: dict  # config keys over the preset


def video_layers(settings: dict) -> VideoLayers:
    """The command, inputs, format, preset and config overrides of a video job's settings."""
    from ..video.commands import DEFAULT_PRESETS

    settings = dict(settings)
    command = settings.pop("command", "animate")
    if command not in COMMANDS:
        raise unknown_choice("video command", str(command), COMMANDS)
    inputs = _inputs(command, settings.pop("keys", None), settings.pop("input", None))
    video_format = settings.pop("format", "mp4")
    if video_format not in FORMATS:
        raise unknown_choice("video format", str(video_format), FORMATS)
    settings.setdefault("preset", DEFAULT_PRESETS[command])
    preset, overrides = generate_config_layers(settings)
    return VideoLayers(command, inputs, video_format, preset, overrides)


def _inputs(command: str, keys, input_video) -> list[str]:
    if command == "interpolate":
        if input_video is not None:
            raise UserError("interpolate takes keys: [image, image, ...] (or keys: [one video]), not input")
        if not isinstance(keys, list) or not keys:
            raise UserError("interpolate needs keys: a list of images or latents (or one video)")
        return [str(key) for key in keys]
    if keys is not None:
        raise UserError(f"keys belong to interpolate, not {command}")
    if command == "restyle":
        if not isinstance(input_video, str) or not input_video:
            raise UserError("restyle needs input: the video or frame folder to restyle")
        return [input_video]
    if input_video is not None:
        raise UserError("animate takes prompts, not an input")
    return []


def check_video(settings: dict) -> None:
    """The video settings, and the files the job names: its keys or input video, and its settings' paths."""
    from ..config import build_config
    from ..paths import check_paths
    from ..video.commands import check_video_config

    video = video_layers(settings)
    config = build_config(None, video.overrides)
    check_video_config(config)
    check_paths(config, kind=video.command, inputs=video.inputs, required=False)


def resolve_video(settings: dict) -> dict:
    from ..config import build_config, to_dict

    video = video_layers(settings)
    config = to_dict(build_config(video.preset, video.overrides))
    config.pop("quiet", None)
    return {"command": video.command, "inputs": video.inputs, "format": video.video_format, "config": config}


def run_video(settings: dict, folder: Path, cache: ModelCache, device: str | None) -> JobOutput:
    from ..loading import load_models
    from ..paths import check_paths
    from ..video.commands import fps_given, make_video

    video = video_layers(settings)
    config = config_for_job(video.preset, video.overrides, folder, device)
    config.output = str(folder / f"video.{video.video_format}")
    check_paths(config, kind=video.command, inputs=video.inputs)  # with the preset's too, before any model loads
    result = make_video(video.command, video.inputs, config,
                        cache.get(model_key(config), lambda: load_models(config)),
                        input_fps=video.command == "restyle" and not fps_given(video.overrides, None))
    first_frame = sorted((folder / "frames").glob("*.png"))[:1]
    prompt = " | ".join(config.prompts) or video.command
    return JobOutput([Path(result.output), *first_frame], None,
                     {"prompt": prompt, "preset": video.preset, "seed": config.seed})


register_kind("video", run_video, check=check_video, resolve=resolve_video)
