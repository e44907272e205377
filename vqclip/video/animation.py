"""Animation: each frame starts from the previous one moved (zoom, rotate, translate) and is optimised.

Frame 0 is an ordinary generation (`video.first_frame_steps` steps from the config's init). Frame
k > 0 decodes frame k−1, warps the picture by the motion schedules at k, encodes it back, and
optimises `steps_per_frame` steps toward the prompts of frame k (a timeline crossfades between
entries). An optional EMA of z over frames (`smoothing`) calms flicker.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import trange

from ..errors import UserError
from ..prompts import PromptSpec, parse_prompts
from .run_state import FrameStore, VideoJob, decode_latent, encode_image, fixed_size, optimise_frame
from .schedule import Schedule, get_ease, parse_schedule

MOTION = ("zoom", "angle", "translate_x", "translate_y", "smoothing")


def motion_schedules(config: DictConfig) -> dict[str, Schedule]:
    """The motion schedules and the `video.schedules` of other keys, parsed (errors point at the text)."""
    video = config.video
    schedules = {f"video.{name}": parse_schedule(_plain(video[name]), f"video.{name}", video.schedule_ease)
                 for name in MOTION}
    for key, spec in _flatten(_plain(video.schedules)).items():
        current = OmegaConf.select(config, key, default=None)
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise UserError(f"video.schedules: {key!r} is not a numeric config key "
                            "(e.g. lr, init.weight, tv_weight, video.steps_per_frame)")
        schedules[key] = parse_schedule(_plain(spec), f"video.schedules.{key}", video.schedule_ease)
    smoothing = schedules["video.smoothing"]
    if any(not 0 <= value < 1 for _, value in smoothing.keys):
        raise UserError("video.smoothing is the previous frame's share in the EMA: keep it in [0, 1)")
    if any(value <= 0 for _, value in schedules["video.zoom"].keys):
        raise UserError("video.zoom must stay above 0 (1 = no zoom, 1.02 = 2 % closer per frame)")
    return schedules


def _flatten(schedules: dict, prefix: str = "") -> dict:
    """{"init": {"weight": "0: 0, 9: 1"}} (what `video.schedules.init.weight=...` makes) ->
    {"init.weight": "0: 0, 9: 1"}; a mapping keyed by frame numbers is a schedule, not a section."""
    flat = {}
    for key, value in schedules.items():
        is_section = isinstance(value, dict) and not all(str(k).strip().isdigit() for k in value)
        if is_section:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def scheduled_values(config: DictConfig, schedules: dict[str, Schedule], frame: int) -> dict[str, float]:
    """Every scheduled key's value at `frame`; whole-number keys (steps, cutn) are rounded."""
    values = {}
    for key, schedule in schedules.items():
        value = schedule.at(frame)
        if isinstance(OmegaConf.select(config, key), int):
            value = round(value)
        values[key] = value
    return values


def frame_prompts(config: DictConfig, frame: int) -> dict:
    """The prompt changes for a frame: {} without a timeline, else the crossfaded prompts.

    Over the `transition` frames before a timeline entry, the previous entry's weights fall
    as (1 − t) and the next one's rise as t (t = 1/(T+1) ... T/(T+1), eased), so the target moves
    smoothly between them and the entry's own frame is the first with only its prompts.
    """
    timeline = sorted((int(key), str(text)) for key, text in config.video.timeline.items())
    if not timeline:
        return {}
    starts = [start for start, _ in timeline]
    index = max(0, sum(1 for start in starts if start <= frame) - 1)
    weighted = [(parse_prompts(timeline[index][1]), 1.0)]
    transition = config.video.transition
    if index + 1 < len(timeline) and transition > 0 and frame >= starts[index + 1] - transition:
        t = get_ease(config.video.schedule_ease)((frame - (starts[index + 1] - transition) + 1) / (transition + 1))
        weighted = [(weighted[0][0], 1 - t), (parse_prompts(timeline[index + 1][1]), t)]
    texts = [text for specs, share in weighted if share > 0 for text in weighted_prompts(specs, share)]
    return {"prompts": texts, "schedule": {}}


def weighted_prompts(specs: list[PromptSpec], share: float) -> list[str]:
    """Prompt specs with their weights scaled by `share`, written back as "text:weight:stop" (both
    numbers always given, so a text ending in a time such as "10:30" keeps its colon)."""
    return [f"{spec.text}:{spec.weight * share!r}:{spec.stop!r}" for spec in specs]


def check_timeline(config: DictConfig) -> None:
    for key, text in config.video.timeline.items():
        if int(key) < 0:
            raise UserError(f"video.timeline: frame {key} must be 0 or more")
        parse_prompts(str(text))
    if config.video.transition < 0:
        raise UserError(f"video.transition must be 0 or more frames, not {config.video.transition}")


def move(image: torch.Tensor, zoom: float, angle: float, translate_x: float, translate_y: float) -> torch.Tensor:
    """The picture (3 × H × W) zoomed about its centre, turned `angle` degrees anticlockwise and
    shifted by whole or fractional pixels; borders are filled by reflection, not black."""
    height, width = image.shape[-2:]
    radians = math.radians(angle)
    cos, sin = math.cos(radians) / zoom, math.sin(radians) / zoom
    # affine_grid maps output to input coordinates in [-1, 1]: the inverse of the motion.
    theta = torch.tensor([[cos, -sin * height / width, -2 * translate_x / width],
                          [sin * width / height, cos, -2 * translate_y / height]],
                         dtype=image.dtype, device=image.device).unsqueeze(0)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    return F.grid_sample(image.unsqueeze(0), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)[0]


def smooth(previous: torch.Tensor | None, z: torch.Tensor, share: float) -> torch.Tensor:
    """Temporal EMA of z: share · previous + (1 − share) · z (share 0: z itself)."""
    if previous is None or share <= 0:
        return z
    return share * previous.to(z.device) + (1 - share) * z


def chain_frames(job: VideoJob, models, metadata: dict, count: int, size: tuple[int, int], start,
                 frame_changes=None, present=None) -> list[torch.Tensor]:
    """Frames made one after another: frame k starts from `start(k, previous latent, scheduled values)`
    (None: the config's init), is optimised, smoothed and stored; finished frames are skipped.
    `frame_changes(k)`: config changes for frame k's run; `present(k, picture)`: the picture stored
    for frame k, from the decoded latent (a masked restyle composites its kept region)."""
    config, video = job.config, job.config.video
    schedules = motion_schedules(config)
    store = FrameStore(job.run_dir / "frames", job.stop)
    previous = None
    for frame in trange(count, desc="frames", unit="frame", disable=config.quiet or None):
        if store.done(frame):
            previous = store.load(frame).to(models.device)
            continue
        values = scheduled_values(config, schedules, frame)
        others = {key: value for key, value in values.items() if not key.startswith("video.")}
        steps = video.first_frame_steps if frame == 0 else values.get("video.steps_per_frame", video.steps_per_frame)
        z0 = start(frame, previous, values)  # before frame_changes: a restyle's flow writes what they name
        changes = {**others, **frame_prompts(config, frame), **(frame_changes(frame) if frame_changes else {})}
        z = optimise_frame(config, models, store.work_dir(frame), z0=z0, steps=steps, seed=config.seed + frame,
                           size=size, changes=changes)
        previous = smooth(previous, z, values["video.smoothing"])
        picture = decode_latent(models.vqgan, previous)
        store.save(frame, previous, present(frame, picture) if present else picture, metadata)
    return [store.image(frame) for frame in range(count)]


def animate_frames(job: VideoJob, models, metadata: dict) -> list[torch.Tensor]:
    """Make (or, resuming, finish) the frames of an animation; returns them all, in order."""
    vqgan = models.vqgan

    def start(frame: int, previous: torch.Tensor | None, values: dict) -> torch.Tensor | None:
        if previous is None:
            return None
        picture = move(decode_latent(vqgan, previous), values["video.zoom"], values["video.angle"],
                       values["video.translate_x"], values["video.translate_y"])
        return encode_image(vqgan, picture, models.device)

    size = fixed_size(job.config)
    return chain_frames(job, models, metadata, job.config.video.frames, size, start)
