"""Cutouts: the random crops of the generated image that CLIP looks at, and their augmentations.

CLIP sees a fixed-size square, so each step cuts the image into `cutn` crops, resizes them to the
model's input size, augments them (Kornia, a pipeline named in augmentations/) and adds noise. Many
random views give a smoother, less adversarial gradient than one view of the whole image.

Randomness: crop boxes and noise come from the `generator` passed in (the global torch RNG when it is
None); Kornia draws its augmentation parameters from the global torch RNG, so the engine seeds torch
(`torch.manual_seed`) for reproducible runs.

Batch order: for an image batch of B, the output holds cutout k of image b at index k*B + b, so
`out.view(cutn, B, 3, S, S)` recovers the structure (every image of the batch gets the same boxes).
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError, closest, unknown_choice
from .resources import named_yaml_files

CUTOUT_MODES = ("classic", "pooled", "mix")


# --- crops -------------------------------------------------------------------------------------


def sample_cutout_boxes(height: int, width: int, cut_size: int, cutn: int, cut_pow: float = 1.0,
                        generator: torch.Generator | None = None, region: torch.Tensor | None = None) -> torch.Tensor:
    """`cutn` random square boxes inside a height×width image: int64 [cutn, 4] = (x0, y0, w, h), w == h.

    size = rand^cut_pow · (min_side − smallest) + smallest, with smallest = min(min_side, cut_size):
    cut_pow > 1 favours small crops (detail), < 1 large ones (composition). An image smaller than
    cut_size gives crops of its whole min side, upsampled later. `region` (H × W booleans, a mask's
    pixels that may change): each box holds a pixel of it, drawn uniformly, and lies anywhere around it.
    """
    if height < 1 or width < 1 or cut_size < 1 or cutn < 1:
        raise ValueError(f"bad cutout request: image {height}x{width}, cut_size {cut_size}, cutn {cutn}")
    if cut_pow < 0:
        raise UserError(f"cut_pow must be >= 0 (1 is the usual value), got {cut_pow}")
    min_side = min(height, width)
    smallest = min(min_side, cut_size)
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(3 if region is None else 4, cutn, generator=generator, device=device, dtype=torch.float64).cpu()
    sizes = (u[0] ** cut_pow * (min_side - smallest) + smallest).long().clamp(smallest, min_side)
    low_x, high_x = torch.zeros_like(sizes), width - sizes
    low_y, high_y = torch.zeros_like(sizes), height - sizes
    if region is not None:  # the offsets that keep the drawn pixel inside the box
        ys, xs = region.nonzero(as_tuple=True)
        pick = (u[3] * len(ys)).long().clamp(max=len(ys) - 1)
        low_x, high_x = (xs[pick] - sizes + 1).clamp(min=0), torch.minimum(xs[pick], high_x)
        low_y, high_y = (ys[pick] - sizes + 1).clamp(min=0), torch.minimum(ys[pick], high_y)
    # Offsets uniform on low..high inclusive; the clamp only guards the u -> 1 rounding edge.
    x0 = (low_x + u[1] * (high_x - low_x + 1)).long().clamp(max=high_x)
    y0 = (low_y + u[2] * (high_y - low_y + 1)).long().clamp(max=high_y)
    return torch.stack([x0, y0, sizes, sizes], dim=1)


def crop_and_resize(image: torch.Tensor, boxes: torch.Tensor, cut_size: int, *,
                    antialias: bool = True) -> torch.Tensor:
    """The reference crop: slice each box (x0, y0, w, h) out of every image, resize to cut_size².

    image [B, C, H, W] -> [len(boxes)·B, C, cut_size, cut_size], box-major (box k, image b at k*B + b).
    Bilinear with align_corners=False; `antialias` filters when downscaling so that small crops of
    a large image do not alias (upscaling is plain bilinear either way). A faster batched path must
    match this one (allclose): `resample_boxes` does. This loop is what the classic scripts do
    (and the benchmark's baseline).
    """
    boxes = _checked_boxes(boxes, image.shape[-2:])
    crops = [
        F.interpolate(image[:, :, top:top + bh, left:left + bw], size=(cut_size, cut_size),
                      mode="bilinear", align_corners=False, antialias=antialias)
        for left, top, bw, bh in boxes.tolist()
    ]
    return torch.cat(crops)


def resample_boxes(image: torch.Tensor, boxes: torch.Tensor, cut_size: int) -> torch.Tensor:
    """`crop_and_resize` for all boxes at once: the same crops (allclose), as two batched matmuls.

    An anti-aliased bilinear resize is separable and linear, so the crop of box k resized to S² is
    R_k · image · C_kᵀ, where R_k [S, H] and C_k [S, W] hold the 1-D resize weights F.interpolate
    uses, placed at the box's rows and columns (zero elsewhere). One batched product replaces a
    Python loop of crops and resizes, runs at matmul speed (in bf16 too), and its backward is one
    more pair of matmuls instead of a scatter per cutout.
    """
    boxes = _checked_boxes(boxes, image.shape[-2:])
    height, width = image.shape[-2:]
    rows = image.new_zeros(len(boxes), cut_size, height)
    columns = image.new_zeros(len(boxes), cut_size, width)
    for k, (left, top, box_width, box_height) in enumerate(boxes.tolist()):
        rows[k, :, top:top + box_height] = _resize_weights(box_height, cut_size).to(rows)
        columns[k, :, left:left + box_width] = _resize_weights(box_width, cut_size).to(columns)
    resized = rows[:, None, None] @ image[None] @ columns[:, None, None].transpose(-1, -2)
    return resized.flatten(0, 1)  # [K, B, C, S, S] -> box-major [K·B, C, S, S]


@functools.lru_cache(maxsize=4096)
def _resize_weights(length: int, size: int) -> torch.Tensor:
    """[size, length]: the weights of F.interpolate's anti-aliased bilinear resize of a 1-D signal.

    Read off F.interpolate itself (resizing an identity matrix along one axis), so the batched path
    follows the reference exactly, whatever the filter's details.
    """
    identity = torch.eye(length, dtype=torch.float64)[None, None]
    weights = F.interpolate(identity, size=(size, length), mode="bilinear", align_corners=False,
                            antialias=True)
    return weights[0, 0].float()


def _checked_boxes(boxes: torch.Tensor, image_size) -> torch.Tensor:
    boxes = boxes.to("cpu", torch.long)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"cutout boxes must be [N, 4] (x0, y0, w, h), got shape {tuple(boxes.shape)}")
    height, width = image_size
    x0, y0, w, h = boxes.unbind(1)
    if not bool(((x0 >= 0) & (y0 >= 0) & (w > 0) & (h > 0) & (x0 + w <= width) & (y0 + h <= height)).all()):
        raise ValueError(f"cutout boxes must lie inside the {height}x{width} image, got {boxes.tolist()}")
    return boxes


def pooled_view(image: torch.Tensor, cut_size: int) -> torch.Tensor:
    """The whole image at cut_size²: half average pool, half max pool (the "pooled" cutouts).

    Max pooling keeps thin bright details that averaging washes out. An image smaller than cut_size
    has nothing to pool, so it is resized instead (adaptive pooling would upsample blockily).
    """
    if min(image.shape[-2:]) < cut_size:
        return F.interpolate(image, size=(cut_size, cut_size), mode="bilinear", align_corners=False,
                             antialias=True)
    return (F.adaptive_avg_pool2d(image, cut_size) + F.adaptive_max_pool2d(image, cut_size)) / 2


def make_cutouts(image: torch.Tensor, cut_size: int, cutn: int, *, cut_pow: float = 1.0,
                 mode: str = "classic", noise_fac: float = 0.1, augment: nn.Module | None = None,
                 generator: torch.Generator | None = None, region: torch.Tensor | None = None,
                 wrap: bool = False) -> torch.Tensor:
    """Cutouts of `image` [B, 3, H, W] in [0, 1] for a CLIP model that takes cut_size² inputs.

    mode: 'classic' random crops (sample_cutout_boxes), 'pooled' the whole image pooled (diversity
    only from `augment`), 'mix' half of each. Then `augment`, then per-cutout noise
    U(0, noise_fac)·N(0, 1). `region`: the random crops each overlap it (sample_cutout_boxes).
    `wrap` (seamless tiles): the image is first rolled by a random offset, so that crops also
    span its edges. Returns [cutn·B, 3, cut_size, cut_size]; gradients reach `image`.
    """
    if mode not in CUTOUT_MODES:
        raise unknown_choice("cutout mode", mode, CUTOUT_MODES)
    if image.ndim != 4:
        raise ValueError(f"make_cutouts expects an image batch [B, C, H, W], got shape {tuple(image.shape)}")
    if cutn < 1:
        raise UserError(f"cutn must be at least 1, got {cutn}")
    if noise_fac < 0:
        raise UserError(f"noise_fac must be >= 0, got {noise_fac}")
    if wrap:
        from .controls.tiling import random_roll

        image, region = random_roll(image, generator, region)
    n_classic = {"classic": cutn, "pooled": 0, "mix": (cutn + 1) // 2}[mode]
    parts = []
    if n_classic:
        boxes = sample_cutout_boxes(*image.shape[-2:], cut_size, n_classic, cut_pow, generator, region)
        parts.append(resample_boxes(image, boxes, cut_size))
    if cutn - n_classic:
        parts.append(pooled_view(image, cut_size).repeat(cutn - n_classic, 1, 1, 1))
    cutouts = torch.cat(parts) if len(parts) > 1 else parts[0]

    if augment is not None:
        # In fp32 with autocast off: under bf16 autocast Kornia's perspective warp solves its
        # homography in bf16, and about 1 cutout in 300 came out NaN, which ended the run.
        with torch.autocast(cutouts.device.type, enabled=False):
            cutouts = augment(cutouts.float())
        if cutouts.shape[-2:] != (cut_size, cut_size):
            raise UserError(f"the augmentation pipeline turned {cut_size}px cutouts into "
                            f"{tuple(cutouts.shape[-2:])}: leave `size` out of crop/resize augmentations "
                            f"so that they keep the cutout size")

    if noise_fac:
        # One noise strength per cutout: some views stay clean, others are noisy.
        device = generator.device if generator is not None else cutouts.device
        facs = torch.rand(cutouts.shape[0], 1, 1, 1, generator=generator, device=device) * noise_fac
        noise = torch.randn(cutouts.shape, generator=generator, device=device)
        cutouts = cutouts + (facs * noise).to(cutouts.device, cutouts.dtype)
    return cutouts


# --- augmentation pipelines ------------------------------------------------------------------------


def build_augmentations(spec) -> nn.Sequential:
    """The augmentation pipeline for `spec`: a shipped pipeline name ('classic'), the path of a YAML
    file (it must exist as given), an inline list of entries (from a preset), or None (no augmentation).

    Each entry is a one-key mapping `{KorniaClassName: {argument: value}}` (see augmentations/*.yaml).
    Returns an nn.Sequential of Kornia modules, applied to a batch [N, 3, S, S] in [0, 1].
    """
    if type(spec).__module__.startswith("omegaconf"):  # a ListConfig from a preset
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True)
    if spec is None:
        return nn.Sequential()
    if isinstance(spec, (list, tuple)):
        entries, where = list(spec), "inline augmentation list"
    elif isinstance(spec, (str, os.PathLike)):
        path = _pipeline_path(os.fspath(spec))
        entries, where = _read_pipeline_file(path), str(path)
    else:
        raise UserError(f"augmentations must be a pipeline name, a YAML path or a list, got {spec!r}")
    return nn.Sequential(*(_build_entry(entry, f"{where}, entry {i + 1}") for i, entry in enumerate(entries)))


def pipeline_file(text: str) -> str | None:
    """The file an `augmentations` value names, or None for a shipped pipeline's name; a value that is
    neither (no path separator, no .yaml) is an unknown name, a UserError naming the shipped ones.

    A name is only ever looked up in the registry, so '../x' can never reach a file through it;
    something that looks like a path is used only if that file exists as given."""
    shipped = named_yaml_files("augmentations")
    if text in shipped:
        return None
    if not (any(sep in text for sep in ("/", "\\", "..")) or text.endswith((".yaml", ".yml"))):
        raise unknown_choice("augmentation pipeline", text, shipped)
    return text


def _pipeline_path(text: str) -> Path:
    file = pipeline_file(text)
    if file is None:
        return named_yaml_files("augmentations")[text]
    if not Path(file).is_file():
        raise UserError(f"augmentation pipeline file {text!r} does not exist "
                        f"(shipped pipelines: {', '.join(sorted(named_yaml_files('augmentations')))})")
    return Path(file)


def _read_pipeline_file(path: Path) -> list:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read augmentation pipeline {path}: {e}") from e
    except yaml.YAMLError as e:
        raise UserError(f"augmentation pipeline {path} is not valid YAML: {e}") from e
    if data is None:  # an empty file is an empty pipeline
        return []
    if not isinstance(data, list):
        raise UserError(f"augmentation pipeline {path} must be a YAML list of entries, got {type(data).__name__}")
    return data


def _augmentation_classes() -> dict[str, type]:
    """The Kornia classes a pipeline may name: 2D augmentations, not abstract bases, containers or 3D."""
    import kornia.augmentation as K

    excluded = ("Base", "Sequential", "Dispather", "3D")
    classes = {name: getattr(K, name, None) for name in K.__all__ if not any(s in name for s in excluded)}
    return {name: c for name, c in classes.items() if isinstance(c, type) and issubclass(c, nn.Module)}


def _build_entry(entry, where: str) -> nn.Module:
    if not (isinstance(entry, dict) and len(entry) == 1):
        raise UserError(f"{where}: expected a one-key mapping like "
                        f"'- RandomHorizontalFlip: {{p: 0.5}}', got {entry!r}")
    (name, args), = entry.items()
    args = {} if args is None else args
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise UserError(f"{where}: the arguments of {name} must be a mapping {{argument: value}}, got {args!r}")
    classes = _augmentation_classes()
    if name not in classes:
        raise UserError(f"{where}: unknown Kornia augmentation {name!r}{closest(str(name), classes)}; "
                        f"see kornia.augmentation for the {len(classes)} valid classes")
    cls = classes[name]
    params = inspect.signature(cls).parameters
    for key in args:
        if key not in params:
            raise UserError(f"{where}: {name} has no argument {key!r}{closest(key, params)}")
    kwargs = {key: _tuples(value) for key, value in args.items()}
    # Crop/resize classes need an output size; left out, it becomes the size of each cutout, so
    # one pipeline serves CLIP models with different input sizes.
    needs_size = "size" in params and params["size"].default is inspect.Parameter.empty and "size" not in kwargs
    try:
        module = cls(size=(224, 224), **kwargs) if needs_size else cls(**kwargs)  # validates the arguments
    except (TypeError, ValueError, AssertionError) as e:
        raise UserError(f"{where}: bad arguments for {name} {args}: {e}") from e
    return _KeepInputSize(cls, kwargs) if needs_size else module


def _tuples(value):
    # YAML has lists only; Kornia's argument checks expect tuples (ranges, kernel sizes).
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class _KeepInputSize(nn.Module):
    """A Kornia crop/resize augmentation built with size = the size of the input it receives."""

    def __init__(self, cls: type, kwargs: dict):
        super().__init__()
        self.cls, self.kwargs = cls, kwargs
        self.built = nn.ModuleDict()  # one module per input size, made on first use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = f"{x.shape[-2]}x{x.shape[-1]}"
        if key not in self.built:
            self.built[key] = self.cls(size=tuple(x.shape[-2:]), **self.kwargs).to(x.device)
        return self.built[key](x)

    def extra_repr(self) -> str:
        return f"{self.cls.__name__}(size=<input size>, {', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"
