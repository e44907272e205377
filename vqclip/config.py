"""The run configuration: a dataclass schema → a preset YAML → command-line `key=value` overrides.

Each preset in presets/ holds only what differs from the defaults below. OmegaConf's structured
configs reject unknown keys and wrong types; the errors are turned into one-line messages that
name the key and the valid choices. YAML is always read with safe loaders (no Python tags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError, closest, first_line, unknown_choice
from .resources import named_yaml_files


@dataclass
class VQGANConfig:
    name: Optional[str] = "imagenet_f16_16384"  # a registry name (`vqclip models list`)
    config: Optional[str] = None  # or a taming YAML ...
    checkpoint: Optional[str] = None  # ... with its checkpoint (.ckpt, .pt, .safetensors)
    format: str = "taming"  # taming | min-dalle (DALL-E mini's detoker.pt as checkpoint) | dvae (DALL-E's decoder.pkl)
    encoder: Optional[str] = None  # format=dvae: the dVAE's encoder.pkl (for image init); optional


@dataclass
class RelaxationConfig:
    """How a DALL-E dVAE's logits become codes at each step (vqgan.format=dvae; docs/models.md)."""

    kind: str = "softmax"  # softmax (annealed mixture of codes) | gumbel (straight-through Gumbel-softmax)
    temperature: float = 1.0  # at the first step ...
    temperature_end: float = 0.1  # ... falling geometrically to this at the last


@dataclass
class ClipModelConfig:
    name: str = "ViT-B-32"  # an open_clip model name, or a path to a model-config JSON
    pretrained: Optional[str] = None  # an open_clip tag ("openai"), a local weight file; null = random weights
    weight: float = 1.0  # this model's share of the loss in an ensemble


@dataclass
class ClipConfig:
    models: list[ClipModelConfig] = field(default_factory=lambda: [ClipModelConfig("ViT-B-32", "openai")])


@dataclass
class InitConfig:
    mode: str = "random"  # random | image | noise | tokens | latent | prior
    image: Optional[str] = None  # mode=image: the picture to start from
    noise: str = "pixels"  # mode=noise: pixels | gradient
    tokens: Optional[str] = None  # mode=tokens: a saved token grid (.pt, h × w integers)
    latent: Optional[str] = None  # mode=latent: a saved z or a run's state.pt
    weight: float = 0.0  # pull toward the anchor: (weight/2) · mse(z, anchor); 0 = off
    anchor: str = "z0"  # z0: the initial latent (what people mean) | zero: the classic scripts' pull to 0
    decay: float = 0.0  # the pull shrinks as weight · (1 - decay)^step
    prior: Optional[str] = None  # mode=prior: the prior to sample (a registry name or a folder)
    prior_candidates: int = 8  # mode=prior: the best of this many samples by CLIP starts the run


@dataclass
class MaskConfig:
    """Edit one region of the start image and keep the rest (vqclip/mask.py); white = may change."""

    image: Optional[str] = None  # a greyscale or alpha mask (any size, resized); restyle: also a mask video
    box: Optional[list[float]] = None  # [x0, y0, x1, y1] to change: fractions of the image (all ≤ 1) or pixels
    invert: bool = False  # change the black part instead
    outpaint: Optional[list[int]] = None  # [left, top, right, bottom] px to grow the canvas (rounded up to the factor)
    fill: str = "random"  # how the region starts: random (codes) | image (outpainting: its edge stretched) | prior
    feather: int = 1  # latent cells over which the gradient mask fades out, so seams blend
    keep_weight: float = 100.0  # pull of the kept pixels toward the start image: weight · masked mse
    composite: str = "pixels"  # the written kept region: pixels (the original's) | latent (as decoded)
    cutouts: str = "all"  # what CLIP sees: all (the whole image, for context) | inside (crops that overlap the region)
    sha256: Optional[str] = None  # recorded: the mask file's hash; a run given one refuses a changed file


@dataclass
class HoldConfig:
    """Pixels pulled toward a picture (vqclip/controls/hold.py); a restyle with video.flow sets it per frame."""

    image: Optional[str] = None  # the picture (resized to the run's size where it differs)
    mask: Optional[str] = None  # greyscale: each pixel's share of the pull (white: all of it); null: every pixel
    weight: float = 0.0  # weight · the mask-weighted mean squared difference; 0: off


@dataclass
class PaletteConfig:
    """A limited palette (vqclip/controls/palette.py, docs/palettes-and-symmetry.md); off while no colours are given."""

    colours: list[str] = field(default_factory=list)  # hex colours: ["#264653", "#e9c46a", "#e76f51"]
    image: Optional[str] = None  # or the colours of this picture, by k-means (--palette-from IMAGE)
    size: int = 8  # colours taken from palette.image
    weight: float = 1.0  # the pull toward each pixel's nearest colour: weight · mean ΔE / 100
    ramp: float = 0.5  # the weight rises from 0 over this fraction of the run
    quantize: bool = False  # write the final image as an indexed PNG of exactly these colours
    dither: bool = False  # ... Floyd–Steinberg dithered


@dataclass
class VideoConfig:
    """`vqclip video ...`: animations, interpolations and restyled videos (vqclip/video/)."""

    frames: int = 60  # animate: frames to make
    fps: float = 12.0  # frames per second of the written video
    first_frame_steps: int = 100  # animate/restyle: optimiser steps for the first frame
    steps_per_frame: int = 20  # ... and for each later one (also guided in-betweens unless guided_steps)
    # Motion per frame (animate). A number, or a keyframed schedule "0: 1.0, 30: 1.05, 60: 1.0".
    zoom: Any = 1.0  # > 1 zooms in
    angle: Any = 0.0  # degrees, anticlockwise
    translate_x: Any = 0.0  # pixels to the right
    translate_y: Any = 0.0  # pixels down
    smoothing: Any = 0.0  # temporal EMA of z: the previous frame's share, 0 = off
    schedules: dict[str, Any] = field(default_factory=dict)  # any other numeric key: {lr: "0: 0.1, 30: 0.05"}
    schedule_ease: str = "linear"  # between schedule keys: linear | cosine | ease-in-out
    timeline: dict[int, str] = field(default_factory=dict)  # {frame: prompts}; empty: `prompts` throughout
    transition: int = 10  # frames over which one timeline entry crossfades into the next
    # Interpolation.
    between: int = 8  # frames made between each pair of keys
    method: str = "slerp"  # lerp | slerp (on z, per latent position)
    ease: str = "linear"  # linear | cosine | ease-in-out
    guided_steps: int = 0  # CLIP steps per in-between frame toward the blended keys; 0 = none
    # Restyle.
    blend: float = 0.3  # the previous styled frame's share in each frame's starting latent
    # Optical flow (OpenCV: pip install 'vqclip[flow]'): each frame starts from the previous styled
    # frame moved along the source's motion, and the pixels seen in both are held toward it
    flow: bool = False
    flow_weight: float = 10.0  # that hold's weight (hold.weight of each frame's run)


@dataclass
class RunConfig:
    description: str = ""  # what a preset is for (shown by `vqclip presets list`)
    # What to draw.
    prompts: list[str] = field(default_factory=list)  # "text[:weight[:stop]]", "a | b" for several, "a ^ b" a story
    image_prompts: list[str] = field(default_factory=list)  # "PATH[:weight]"
    noise_prompts: list[str] = field(default_factory=list)  # "seed:weight"
    story_every: Optional[int] = None  # story mode ("^"): steps per phrase; null: the steps split evenly
    schedule: dict[int, str] = field(default_factory=dict)  # {step: prompt}: a timeline in a preset
    # {steps done: {prompts: "a | b:0.5", lr: 0.05}}: changes from that step on, as the web UI's live
    # steering records them; --from and --resume make them again (vqclip/controls/steering.py)
    steering: dict[int, Any] = field(default_factory=dict)
    # The image.
    # [width, height], multiples of the VQGAN factor; or auto: the largest square (and cutn) that fits
    # the memory budget, measured on the spot
    size: Any = field(default_factory=lambda: [256, 256])
    memory_budget_mb: Optional[float] = None  # for size=auto; null: the device's free memory now
    time_budget_s: Optional[float] = 300.0  # size=auto on a CPU: the whole run's predicted seconds; null: memory alone
    checkpoint_decoder: Optional[bool] = None  # recompute decoder activations in backward; null: from 512² px up
    # A canvas larger than memory (docs/canvases.md): [width, height], each step decodes and judges one
    # random window of the canvas, as the whole decode draws it; null: the whole canvas every step
    window: Optional[list[int]] = None
    window_refresh: int = 10  # steps between the whole decodes that renew the windows' GroupNorm statistics
    compile: bool = False  # torch.compile the decoder step (minutes to compile; pays off in long GPU runs)
    steps: int = 500
    seed: Optional[int] = None  # null: a random seed, recorded with the outputs
    batch_size: int = 1  # candidates optimised together; the best by CLIP score is final.png
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: Optional[int] = None  # CPU threads for torch; null: the usable cores (vqclip/machine/threads.py), recorded
    precision: str = "auto"  # the frozen networks' dtype: auto (bf16 where fast: CUDA, AVX512-BF16 CPUs) | fp32 | bf16 | fp16
    # Models.
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    init: InitConfig = field(default_factory=InitConfig)
    relaxation: RelaxationConfig = field(default_factory=RelaxationConfig)  # dVAE decoders only
    mask: MaskConfig = field(default_factory=MaskConfig)  # inpainting and outpainting
    video: VideoConfig = field(default_factory=VideoConfig)  # used by `vqclip video ...` only
    # Cutouts and augmentations.
    cutn: int = 32
    cut_pow: float = 1.0
    cut_mode: str = "classic"  # classic | pooled | mix
    noise_fac: float = 0.1  # per-cutout noise U(0, noise_fac) · N(0, 1)
    augmentations: Any = "classic"  # a pipeline name in augmentations/, a YAML path, or an inline list
    tv_weight: float = 0.0  # total-variation penalty on the image: flat regions over CLIP-pleasing noise
    # The picture's form (docs/tiles.md, docs/palettes-and-symmetry.md).
    tile: bool = False  # a seamless tile: circular padding, wrapped cutouts, final-3x3.png beside final.png
    symmetry: str = "none"  # none | horizontal (left mirrors right) | vertical (top mirrors bottom) | both
    symmetry_weight: float = 30.0  # the pull toward the mirror image: weight · mean |image − mirror|
    palette: PaletteConfig = field(default_factory=PaletteConfig)
    hold: HoldConfig = field(default_factory=HoldConfig)
    # Optimisation.
    optimizer: str = "Adam"  # any torch.optim optimiser by name
    lr: float = 0.1
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments
    lr_schedule: str = "constant"  # constant | drops | plateau
    lr_drops: list[float] = field(default_factory=lambda: [0.5, 0.8])  # drops: fractions of the run
    lr_drop_factor: float = 0.5  # drops/plateau: multiply lr by this
    lr_patience: int = 20  # plateau: steps without improvement before a drop
    # Outputs.
    output: Optional[str] = None  # also write the final image here
    run_dir: Optional[str] = None  # default: outputs/<date>/<NNNN>-<prompt-slug>/
    outputs_root: str = "outputs"
    save_every: int = 50  # progress images; 0 = none
    checkpoint_every: int = 50  # state.pt for resuming
    quiet: bool = False


MAX_SIDE, MAX_CUTN, MAX_BATCH, MAX_THREADS = 16384, 4096, 1024, 1024  # far beyond any device; they stop absurd allocations

# Keys with a fixed set of values, and where that set lives: the module that acts on the value owns it.
CHOICES = {
    "init.mode": ("vqclip.start", "INIT_MODES"),
    "init.noise": ("vqclip.start", "NOISE_KINDS"),
    "init.anchor": ("vqclip.start", "ANCHORS"),
    "cut_mode": ("vqclip.cutouts", "CUTOUT_MODES"),
    "precision": ("vqclip.machine.precision", "PRECISION_CHOICES"),
    "lr_schedule": ("vqclip.optimize", "LR_SCHEDULES"),
    "vqgan.format": ("vqclip.models.registry", "VQGAN_FORMATS"),
    "relaxation.kind": ("vqclip.models.dvae", "RELAXATIONS"),
    "mask.fill": ("vqclip.mask", "FILLS"),
    "mask.composite": ("vqclip.mask", "COMPOSITES"),
    "mask.cutouts": ("vqclip.mask", "CUTOUT_REGIONS"),
    "symmetry": ("vqclip.controls.symmetry", "SYMMETRIES"),
}


def choices(key: str) -> tuple[str, ...]:
    """The valid values of a CHOICES key, from the module that owns them."""
    import importlib

    module, name = CHOICES[key]
    return tuple(getattr(importlib.import_module(module), name))


# Command-line flags whose names are not the config keys they set (a batch job's keys use these
# names too); any other flag has its key's name.
FLAG_KEYS = {"prompt": "prompts", "batch": "batch_size", "image_prompt": "image_prompts",
             "noise_prompt": "noise_prompts", "init_image": "init.image",
             "frames": "video.frames", "fps": "video.fps", "between": "video.between", "method": "video.method",
             "ease": "video.ease", "steps_per_frame": "video.steps_per_frame", "guided": "video.guided_steps",
             "mask": "mask.image", "mask_box": "mask.box", "mask_invert": "mask.invert", "outpaint": "mask.outpaint",
             "palette_colours": "palette.colours", "palette_from": "palette.image"}
LIST_KEYS = ("prompts", "image_prompts", "noise_prompts")  # a single value given for these is a list of one


def overrides_from_flags(flags: dict) -> dict:
    """Flag names and values → nested config overrides (None values are left out; names that are
    config keys pass through). `init_image` also sets init.mode=image, as --init-image does."""
    overrides: dict = {}
    for name, value in flags.items():
        if value is None:
            continue
        key = FLAG_KEYS.get(name, name)
        if key != name and flags.get(key) is not None:
            raise UserError(f"set {name} or {key}, not both")
        if key in LIST_KEYS and not isinstance(value, list):
            value = [value]
        *parents, leaf = key.split(".")
        node = overrides
        for parent in parents:
            existing = node.get(parent)
            if existing is not None and not isinstance(existing, dict):
                raise UserError(f"{parent} must be a group of settings, not {existing!r}")
            node[parent] = node = dict(existing or {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            value = {**node[leaf], **value}
        node[leaf] = value
        if name == "init_image":
            node["mode"] = "image"
    return overrides


def merge_settings(base: dict, layer: dict, where: str = "settings", path: str = "") -> dict:
    """base with layer's values on top; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in layer.items():
        here = f"{path}.{key}" if path else key
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value, where, here)
        elif isinstance(value, dict) and key in merged and merged[key] is not None:
            raise UserError(f"{where}: {here} is set both as a value and as a group of settings")
        else:
            merged[key] = value
    return merged


def key_names() -> set[str]:
    """Every config key, dotted ("cutn", "init.weight", "video.zoom")."""
    def walk(node: DictConfig, prefix: str) -> set[str]:
        names = set()
        for key in node.keys():
            names.add(prefix + str(key))
            child = node._get_node(key)
            if isinstance(child, DictConfig) and child._metadata.object_type not in (None, dict):
                names |= walk(child, f"{prefix}{key}.")
        return names

    return walk(OmegaConf.structured(RunConfig), "")


def preset_names() -> list[str]:
    return list(named_yaml_files("presets"))


def preset_path(preset: str) -> Path:
    """A shipped preset by name, or a YAML file given as a path that exists (never built from a name)."""
    shipped = named_yaml_files("presets")
    if preset in shipped:
        return shipped[preset]
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    if re.search(r"[/\\]|\.\.", preset) or path.suffix in (".yaml", ".yml"):
        raise UserError(f"preset file not found: {preset}")
    raise unknown_choice("preset", preset, shipped)


def read_yaml(path: Path, what: str = "config keys") -> dict:
    """A YAML file that holds a mapping (of `what`), read safely: Python tags are refused."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML (Python tags are refused): {str(exc).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of {what}, not a {type(data).__name__}")
    return data


def build_config(preset: str | None = "default", overrides: dict | None = None,
                 dotlist: list[str] | None = None) -> DictConfig:
    """defaults ← preset ← `overrides` (from flags or Python) ← `key=value` strings."""
    config = OmegaConf.structured(RunConfig)
    layers = []
    if preset:
        layers.append((f"preset {preset}", read_yaml(preset_path(preset))))
    if overrides:
        layers.append(("arguments", overrides))
    for source, layer in layers:
        config = _merge(config, OmegaConf.create(_step_keys(layer)), source)
    for item in dotlist or ():
        config = _merge(config, _parse_override(item), "command line")
    _refuse_interpolations(config)
    validate(config)
    return config


def _step_keys(layer: dict) -> dict:
    """The layer with the steps of its step-keyed groups (schedule, steering, video.timeline) as
    numbers: a config read back from a PNG's JSON metadata has "12" where its YAML had 12."""
    def numbered(steps: dict) -> dict:
        return {int(key) if isinstance(key, str) and key.strip().isdigit() else key: value
                for key, value in steps.items()}

    if not isinstance(layer, dict):
        return layer
    layer = dict(layer)  # the caller's dict stays as it was
    for key in ("schedule", "steering"):
        if isinstance(layer.get(key), dict):
            layer[key] = numbered(layer[key])
    video = layer.get("video")
    if isinstance(video, dict) and isinstance(video.get("timeline"), dict):
        layer["video"] = {**video, "timeline": numbered(video["timeline"])}
    return layer


def apply_settings(settings, items: list[str], source: str = "settings"):
    """A copy of the dataclass `settings` (a training recipe's) with `key=value` strings applied, read
    and checked as the run config's are: unknown keys and wrong types are refused with the valid
    keys named."""
    config = OmegaConf.structured(settings)
    for item in items:
        config = _merge(config, _parse_override(item), source)
    _refuse_interpolations(config)
    return OmegaConf.to_object(config)


def _parse_override(item: str) -> DictConfig:
    """One `key=value`; the value is YAML (read safely: Python tags are refused)."""
    if "=" not in item:
        raise UserError(f"{item!r} is not key=value (quote a prompt that contains '=')")
    try:
        return OmegaConf.from_dotlist([item])
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot read the override {item[:80]!r}: {first_line(exc)}") from None


def _merge(config: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(config, layer)
    except OmegaConfBaseException as exc:
        raise _config_error(exc, config, source) from None
    except (TypeError, ValueError) as exc:  # e.g. a mapping given where a list belongs
        raise UserError(f"bad value in {source}: {first_line(exc)}") from None


def _refuse_interpolations(node, path: str = "") -> None:
    """${...} would be resolved late (and ${oc.env:...} would copy the environment into outputs)."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        here = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_interpolation(node, key):
            raise UserError(f"{here}: interpolations like ${{...}} are not supported in vqclip configs")
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            _refuse_interpolations(child, here)


def _config_error(exc: OmegaConfBaseException, config: DictConfig, source: str) -> UserError:
    key = getattr(exc, "full_key", None) or ""
    message = first_line(exc)
    if "Key" in message and "not in" in message or "ConfigKeyError" in type(exc).__name__:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
        return UserError(f"unknown config key {key!r} in {source}{closest(leaf, valid)}; "
                         f"valid keys{' under ' + parent if parent else ''}: {', '.join(valid)}")
    value = getattr(exc, "msg", None) or message
    if "is not a ListConfig" in value:  # OmegaConf's words for one value where the schema has a list
        return UserError(f"{key or 'this key'} in {source} takes a list: put its values in brackets, "
                         f"{key or 'key'}=[first, second, ...]")
    return UserError(f"bad value for {key or 'a config key'} in {source}: {value.splitlines()[0]}")



def validate(config: DictConfig) -> None:
    """Checks that the schema's types cannot express; the VQGAN factor is checked once it is loaded.

    The first rule broken is reported, as a one-line UserError that names the key.
    """
    _check_choices(config)
    _check_counts(config)
    _check_size(config)
    _check_numbers(config)
    _check_machine(config)
    _check_schedules(config)
    _check_mask(config)
    _check_form(config)
    if not config.clip.models:
        raise UserError("clip.models is empty: name at least one CLIP model")


def _check_choices(config: DictConfig) -> None:
    for key in CHOICES:
        value = OmegaConf.select(config, key)
        if value not in choices(key):
            raise unknown_choice(key, str(value), choices(key))


def _check_counts(config: DictConfig) -> None:
    """Counts are at least 1 (null: chosen later) and, where memory grows with them, bounded."""
    positive = {"steps": config.steps, "batch_size": config.batch_size, "cutn": config.cutn,
                "story_every": config.story_every, "init.prior_candidates": config.init.prior_candidates}
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise UserError(f"{key} must be at least 1, not {value}")
    for key, limit in (("cutn", MAX_CUTN), ("batch_size", MAX_BATCH)):
        if config[key] > limit:
            raise UserError(f"{key} {config[key]} is beyond {limit}")


def _check_size(config: DictConfig) -> None:
    if config.size == "auto":
        return
    if not (OmegaConf.is_list(config.size) and len(config.size) == 2 and all(
            isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in config.size)):
        raise UserError(f"size must be two positive whole numbers (width height) or auto, not {config.size}")
    if max(config.size) > MAX_SIDE:
        raise UserError(f"size {list(config.size)} is beyond {MAX_SIDE} px a side: no device holds that")


def _check_numbers(config: DictConfig) -> None:
    """The learning rate, the seed, the weights and the factors."""
    if not 0 < config.lr < float("inf"):
        raise UserError(f"lr must be a positive finite number, not {config.lr}")
    if config.seed is not None and not 0 <= config.seed < 2**63:
        raise UserError(f"seed must be between 0 and 2**63-1, not {config.seed}")
    finite = {"cut_pow": config.cut_pow, "noise_fac": config.noise_fac, "tv_weight": config.tv_weight,
              "init.weight": config.init.weight, "mask.keep_weight": config.mask.keep_weight,
              "init.decay": config.init.decay, "lr_drop_factor": config.lr_drop_factor}
    for key, value in finite.items():
        if not 0 <= value < float("inf"):
            raise UserError(f"{key} must be a finite number of 0 or more, not {value}")
    for key in ("temperature", "temperature_end"):
        if not 0 < config.relaxation[key] < float("inf"):
            raise UserError(f"relaxation.{key} must be a positive finite number, not {config.relaxation[key]}")
    if not config.init.decay < 1 or not 0 < config.lr_drop_factor <= 1:
        raise UserError("init.decay must be below 1 and lr_drop_factor in (0, 1]")


def _check_machine(config: DictConfig) -> None:
    """The device, the CPU threads and the memory budget."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", config.device):
        raise UserError(f"device {config.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if config.threads is not None and not 1 <= config.threads <= MAX_THREADS:
        raise UserError(f"threads must be between 1 and {MAX_THREADS}, not {config.threads}")
    if config.memory_budget_mb is not None and not 0 < config.memory_budget_mb < float("inf"):
        raise UserError(f"memory_budget_mb must be a positive number of megabytes, not {config.memory_budget_mb}")
    if config.time_budget_s is not None and not 0 < config.time_budget_s < float("inf"):
        raise UserError(f"time_budget_s must be a positive number of seconds (or null: memory alone), "
                        f"not {config.time_budget_s}")


def _check_schedules(config: DictConfig) -> None:
    """What happens at which step: lr drops, files written, the prompt timeline."""
    if any(not 0 < fraction < 1 for fraction in config.lr_drops):
        raise UserError(f"lr_drops are fractions of the run, between 0 and 1: not {list(config.lr_drops)}")
    if config.lr_patience < 0:
        raise UserError(f"lr_patience must be 0 or more, not {config.lr_patience}")
    for key in ("save_every", "checkpoint_every"):
        if config[key] < 0:
            raise UserError(f"{key} must be 0 (off) or positive, not {config[key]}")
    if any(step < 0 for step in config.schedule):
        raise UserError("schedule steps must be 0 or more")
    if config.steering:
        from .controls.steering import check_steering

        check_steering(config.steering)


def _check_mask(config: DictConfig) -> None:
    """The mask's numbers; whether they fit the image is checked once its size is known (vqclip/mask.py)."""
    mask = config.mask
    if mask.invert and not mask.image and mask.box is None:
        raise UserError("--mask-invert (mask.invert) inverts a mask, and none is given: add --mask PATH or "
                        "--mask-box X0 Y0 X1 Y1")
    if mask.box is not None:
        x0, y0, x1, y1 = _four(mask.box, "mask.box", "X0 Y0 X1 Y1")
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise UserError(f"mask.box {list(mask.box)} is not a box: give X0 Y0 X1 Y1 with X0 < X1, Y0 < Y1, "
                            "none below 0 (fractions of the image, or pixels)")
    if mask.outpaint is not None:
        sides = _four(mask.outpaint, "mask.outpaint", "LEFT TOP RIGHT BOTTOM")
        if min(sides) < 0 or max(sides) <= 0:
            raise UserError(f"--outpaint {' '.join(map(str, sides))}: give the pixels to add on each side "
                            "(LEFT TOP RIGHT BOTTOM), none below 0 and at least one above 0")
        if max(sides) > MAX_SIDE:
            raise UserError(f"--outpaint {' '.join(map(str, sides))} is beyond {MAX_SIDE} px a side")
    if not 0 <= mask.feather <= 64:
        raise UserError(f"mask.feather is a number of latent cells from 0 to 64, not {mask.feather}")


def _check_form(config: DictConfig) -> None:
    """Tiles, symmetry and the palette."""
    from .controls.palette import check_palette

    if config.tile and config.mask.outpaint is not None:
        raise UserError("tile=true makes a picture that wraps around, and --outpaint grows a picture outward: "
                        "use one or the other")
    if not 0 <= config.symmetry_weight < float("inf"):
        raise UserError(f"symmetry_weight must be a finite number of 0 or more, not {config.symmetry_weight}")
    check_palette(config.palette)
    if not 0 <= config.hold.weight < float("inf"):
        raise UserError(f"hold.weight must be a finite number of 0 or more, not {config.hold.weight}")
    if config.hold.weight and not config.hold.image:
        raise UserError("hold.weight needs hold.image: the picture the pixels are held toward")
    if config.hold.image and not config.hold.weight:
        raise UserError("hold.image holds nothing at hold.weight 0: give hold.weight (e.g. hold.weight=10)")
    if config.window is not None:
        _check_window(config)


def _check_window(config: DictConfig) -> None:
    if len(config.window) != 2 or min(config.window) <= 0:
        raise UserError(f"window must be two positive whole numbers (width height), not {list(config.window)}")
    if config.window_refresh < 1:
        raise UserError(f"window_refresh must be at least 1, not {config.window_refresh}")
    clash = next((what for what, on in (("tile=true", config.tile), ("symmetry", config.symmetry != "none"),
                                        ("a mask", config.mask.image or config.mask.box),
                                        ("--outpaint", config.mask.outpaint is not None),
                                        ("hold.image", config.hold.image and config.hold.weight)) if on), None)
    if clash:
        raise UserError(f"window= judges one part of the canvas at a time, and {clash} needs the whole picture "
                        "each step: use one or the other")
    if config.init.mode == "prior":
        raise UserError("window= is for a canvas larger than a prior draws: start it with init.mode=random or an "
                        "--init-image")
    if "dvae" in _vqgan_formats(config):
        raise UserError("window= needs a taming VQGAN (or min-dalle's detokenizer); DALL-E's dVAE decodes whole "
                        "pictures only: drop window, or pick another vqgan")


def _vqgan_formats(config: DictConfig) -> set[str]:
    """What the VQGAN's file format may be, before anything is loaded: vqgan.format, and a registry
    name's."""
    from .models.registry import VQGANS

    entry = VQGANS.get(config.vqgan.name) if config.vqgan.name else None
    return {config.vqgan.format, *([entry.format] if entry is not None else [])}


def _four(values, key: str, names: str) -> list:
    if len(values) != 4:
        raise UserError(f"{key} takes four numbers, {names}: not {list(values)}")
    return list(values)


def to_yaml(config: DictConfig) -> str:
    return OmegaConf.to_yaml(config, resolve=True)


def to_dict(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)
