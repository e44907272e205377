"""Frame interpolation in latent space: keys → in-between frames; a clip → a higher frame rate.

A key is an image (encoded by the VQGAN), a saved latent or run state (`.pt`), or a prompt
(generated first). A key that looks like a file (an image, video or .pt suffix, or a path) must
exist: a typo is an error, not a prompt. Any other key is a prompt. `between` frames are made
between each pair of keys by lerp or slerp on z.

The keys are quantised (their codes), so the first and last frames are exactly the keys' VQGAN
reconstructions; the in-betweens are decoded from the blended latent as it is, without snapping
it to codes (snapping flips many positions at once: a hard cut).

Even that unsnapped blend does not change the picture evenly in t: the decoder holds the first
key's picture for most of the way and then flips within a short stretch of t (measured from a red
circle to a blue square: 23 % of the change by t = 0.4, 86 % by t = 0.65). Equal steps in t
therefore give one frame that pops. So the in-betweens are placed by how far the *picture* has
moved: each pair's blend is decoded at a few dozen t, the pixel change along the way is summed,
and frame j takes the t where the picture has covered ease(j / (between + 1)) of that path
(`even_times`). With `guided_steps`, each in-between frame is then optimised a few CLIP steps
toward the keys' targets weighted by that share, which makes it sharp again.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..errors import UserError, unknown_choice
from ..outputs import load_image
from ..paths import check_paths
from ..prompts import parse_prompts
from ..start import check_size, read_latent
from .animation import weighted_prompts
from .frames import IMAGE_SUFFIXES, is_video_input, read_frames
from .run_state import FrameStore, VideoJob, decode_latent, encode_image, fixed_size, optimise_frame
from .schedule import get_ease

METHODS = ("lerp", "slerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation of each latent position's vector (over dim 1, the channels).

    The angle and the norms both move smoothly; where the two vectors are (nearly) parallel,
    slerp and lerp agree and lerp is used. t = 0 gives a, t = 1 gives b.
    """
    norm_a, norm_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    unit_a, unit_b = a / norm_a.clamp_min(1e-12), b / norm_b.clamp_min(1e-12)
    omega = (unit_a * unit_b).sum(1, keepdim=True).clamp(-1, 1).acos()
    sin = omega.sin()
    safe = sin.abs() > eps
    denominator = torch.where(safe, sin, torch.ones_like(sin))
    wa = torch.where(safe, ((1 - t) * omega).sin() / denominator, torch.full_like(sin, 1 - t))
    wb = torch.where(safe, (t * omega).sin() / denominator, torch.full_like(sin, t))
    direction = wa * unit_a + wb * unit_b
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    blended = direction * lerp(norm_a, norm_b, t)
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    return torch.where(safe, blended, lerp(a, b, t))


def blend(method: str, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    if method not in METHODS:
        raise unknown_choice("video.method", method, METHODS)
    return (lerp if method == "lerp" else slerp)(a, b, t)


def in_between_times(between: int, ease: str) -> list[float]:
    """The eased share of the way (0..1) of the `between` frames strictly between two keys."""
    curve = get_ease(ease, "video.ease")
    return [curve(j / (between + 1)) for j in range(1, between + 1)]


def even_times(vqgan, method: str, a: torch.Tensor, b: torch.Tensor, shares: list[float],
               samples: int) -> list[float]:
    """The t at which the decoded blend of a and b has covered each share of its way in pixels.

    The way is measured as the summed mean absolute pixel change between the pictures at
    `samples` + 1 even t; between two samples t is read off linearly. Pictures that do not change
    at all keep t = share.
    """
    grid = [i / samples for i in range(samples + 1)]
    covered, previous = [0.0], decode_as_is(vqgan, a)
    for t in grid[1:]:
        picture = decode_as_is(vqgan, blend(method, a, b, t))
        covered.append(covered[-1] + float((picture - previous).abs().mean()))
        previous = picture
    if covered[-1] <= 0:
        return list(shares)
    times = []
    for share in shares:
        target = share * covered[-1]
        i = min(max(bisect.bisect_left(covered, target), 1), samples)  # covered[i-1] < target <= covered[i]
        span = covered[i] - covered[i - 1]
        times.append(grid[i - 1] + (grid[i] - grid[i - 1]) * ((target - covered[i - 1]) / span if span > 0 else 0.0))
    return times


def samples_for(between: int) -> int:
    """Decodes per pair for `even_times`: about four per frame, at least 16, so that the short
    stretch where the picture flips is sampled finely enough to place frames in it."""
    return max(16, 4 * (between + 1))


@dataclass
class Key:
    text: str  # as given
    kind: str  # image | latent | prompt
    size: tuple[int, int] | None  # width, height of an image key (latents are checked once loaded)


def classify_keys(inputs: list[str]) -> list[Key]:
    """What each key is; image keys of different sizes are refused, naming both."""
    check_paths(None, kind="interpolate", inputs=inputs)  # a key that looks like a file is one: a typo is an error
    keys = []
    for text in inputs:
        path = Path(text)
        if path.is_file() and path.suffix.lower() == ".pt":
            keys.append(Key(text, "latent", None))
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            keys.append(Key(text, "image", tuple(load_image(path, what="key").shape[-1:-3:-1])))
        elif path.is_file() or path.is_dir():
            raise UserError(f"key {text} is a video or folder: give it alone to up-convert its frame rate, "
                            f"or give images ({', '.join(IMAGE_SUFFIXES)}), latents (.pt) or prompts as keys")
        else:
            keys.append(Key(text, "prompt", None))
    sized = [(index, key) for index, key in enumerate(keys) if key.size]
    for index, key in sized[1:]:
        first_index, first = sized[0]
        if key.size != first.size:
            raise UserError(f"keys differ in size: key {index + 1} {key.text} is {key.size[0]}×{key.size[1]} but "
                            f"key {first_index + 1} {first.text} is {first.size[0]}×{first.size[1]}; "
                            "give keys of one size")
    return keys


def interpolation_mode(inputs: list[str]) -> str:
    """'upconvert' for one video or folder, 'keys' for two or more keys; anything else is an error."""
    if len(inputs) == 1:
        check_paths(None, kind="interpolate", inputs=inputs)
    if len(inputs) == 1 and is_video_input(inputs[0]):
        return "upconvert"
    if len(inputs) < 2:
        raise UserError(f"interpolate needs at least two keys (images, latents or prompts), got {len(inputs)}; "
                        "or one video or frame folder to up-convert")
    classify_keys(inputs)
    return "keys"


def key_latents(job: VideoJob, models, metadata: dict) -> tuple[list[torch.Tensor], list[Key]]:
    """Each key's latent (a prompt key is generated first), stored under keys/ for resuming."""
    config, vqgan = job.config, models.vqgan
    keys = classify_keys(job.inputs)
    sizes = [key.size for key in keys if key.size]
    size = sizes[0] if sizes else fixed_size(config)
    check_size(size, vqgan.factor)
    store = FrameStore(job.run_dir / "keys", job.stop)
    latents = []
    for index, key in enumerate(tqdm(keys, desc="keys", unit="key", disable=config.quiet or None)):
        if not store.done(index):
            if key.kind == "image":
                z = vqgan.quantize(encode_image(vqgan, load_image(key.text, what="key")[0], models.device))
            elif key.kind == "latent":
                z = vqgan.quantize(latent_key(key.text, vqgan, size).to(models.device))
            else:
                z = vqgan.quantize(optimise_frame(config, models, store.work_dir(index), z0=None, steps=config.steps,
                                                  seed=config.seed + index, size=size,
                                                  changes={"prompts": [key.text], "schedule": {}}))
            store.save(index, z, decode_latent(vqgan, z), {**metadata, "key": key.text})
        latents.append(store.load(index).to(models.device))
    shapes = {tuple(z.shape) for z in latents}
    if len(shapes) > 1:
        described = ", ".join(f"key {i + 1} {k.text}: {tuple(z.shape[1:])}" for i, (k, z) in enumerate(zip(keys, latents)))
        raise UserError(f"keys differ in latent shape ({described}); give keys of one size")
    return latents, keys


def latent_key(path: str, vqgan, size: tuple[int, int]) -> torch.Tensor:
    """A saved latent or state.pt as a key: 1 × C × h × w, checked against the VQGAN and the frame size."""
    stored = read_latent(path).float()
    rows, columns = size[1] // vqgan.factor, size[0] // vqgan.factor
    if stored.ndim < 3 or tuple(stored.shape[-3:]) != (vqgan.embed_dim, rows, columns):
        raise UserError(f"key {path} holds a latent of shape {tuple(stored.shape)}, but frames of {size[0]}×{size[1]} "
                        f"with this VQGAN need {(vqgan.embed_dim, rows, columns)}: give keys of one size")
    return stored.reshape(-1, *stored.shape[-3:])[:1]


def check_latent_keys(inputs: list[str], vqgan, size: tuple[int, int]) -> None:
    """Latent keys must fit the VQGAN and the other keys' size (checked before the run folder exists)."""
    for key in classify_keys(inputs):
        if key.kind == "latent":
            latent_key(key.text, vqgan, size)


def guided_changes(keys: list[Key], store: FrameStore, pair: tuple[int, int], t: float) -> dict:
    """Targets for a guided in-between: each key's prompt (or its picture as an image prompt), weighted."""
    prompts, image_prompts = [], []
    for index, share in zip(pair, (1 - t, t)):
        key = keys[index]
        if key.kind == "prompt":
            prompts.extend(weighted_prompts(parse_prompts(key.text), share))
        else:
            image_prompts.append(f"{store.png(index)}:{share!r}")
    return {"prompts": prompts, "image_prompts": image_prompts, "schedule": {}, "noise_prompts": []}


def interpolate_frames(job: VideoJob, models, metadata: dict) -> list[torch.Tensor]:
    """The frames: key 1, its in-betweens, key 2, ... key N (each pair's frames in order)."""
    config, video = job.config, job.config.video
    if interpolation_mode(job.inputs) == "upconvert":
        latents, keys = upconvert_latents(job, models, metadata), None
    else:
        latents, keys = key_latents(job, models, metadata)
    shares = in_between_times(video.between, video.ease)
    store, key_store = FrameStore(job.run_dir / "frames", job.stop), FrameStore(job.run_dir / "keys", job.stop)
    plan = []  # (pair, share of the way in pixels, t of the latent blend), one per frame
    for pair in range(len(latents) - 1):
        plan.append((pair, 0.0, 0.0))
        first, count = len(plan), len(shares)
        if any(not store.done(frame) for frame in range(first, first + count)):  # a finished pair needs no decodes
            times = even_times(models.vqgan, video.method, latents[pair], latents[pair + 1], shares,
                               samples_for(video.between))
        else:
            times = shares
        plan.extend((pair, share, t) for share, t in zip(shares, times))
    plan.append((len(latents) - 2, 1.0, 1.0))
    steps = video.guided_steps
    for frame, (pair, share, t) in enumerate(tqdm(plan, desc="frames", unit="frame", disable=config.quiet or None)):
        if store.done(frame):
            continue
        z = blend(video.method, latents[pair], latents[pair + 1], t)
        if steps and keys is not None and 0 < t < 1:
            z = optimise_frame(config, models, store.work_dir(frame), z0=z, steps=steps, seed=config.seed + frame,
                               size=_size_of(z, models.vqgan),
                               changes=guided_changes(keys, key_store, (pair, pair + 1), share))
            image = decode_latent(models.vqgan, z)
        else:
            image = decode_as_is(models.vqgan, z)
        store.save(frame, z, image, {**metadata, "t": t, "share": share})
    return [store.image(frame) for frame in range(len(plan))]


@torch.no_grad()
def decode_as_is(vqgan, z: torch.Tensor) -> torch.Tensor:
    """The picture of a latent without snapping it to codes (a key's codes decode to its reconstruction)."""
    return vqgan.decode(z)[0]


def _size_of(z: torch.Tensor, vqgan) -> tuple[int, int]:
    return z.shape[-1] * vqgan.factor, z.shape[-2] * vqgan.factor


def upconvert_latents(job: VideoJob, models, metadata: dict) -> list[torch.Tensor]:
    """Each frame of the input clip, encoded (stored under keys/ for resuming)."""
    frames, _ = read_frames(job.inputs[0])
    height, width = frames[0].shape[-2:]
    check_size((width, height), models.vqgan.factor)
    store = FrameStore(job.run_dir / "keys", job.stop)
    latents = []
    for index, frame in enumerate(frames):
        if not store.done(index):
            z = models.vqgan.quantize(encode_image(models.vqgan, frame, models.device))
            store.save(index, z, decode_latent(models.vqgan, z), metadata)
        latents.append(store.load(index).to(models.device))
    if len(latents) < 2:
        raise UserError(f"{job.inputs[0]} has one frame: up-conversion needs at least two")
    return latents


def check_interpolation(config: DictConfig) -> None:
    get_ease(config.video.ease, "video.ease")
    if config.video.method not in METHODS:
        raise unknown_choice("video.method", config.video.method, METHODS)
    if config.video.between <= 0:
        raise UserError(f"--between must be at least 1 frame, not {config.video.between}")
    if config.video.guided_steps < 0:
        raise UserError(f"video.guided_steps must be 0 (off) or more, not {config.video.guided_steps}")
