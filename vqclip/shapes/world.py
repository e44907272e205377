"""The shapes world: one flat-coloured shape on a flat-coloured background, drawn by vqclip itself.

Everything here is exact so that an image can be judged by its pixels (see judge.py):
64×64 RGB by default, eight palette colours, three upright shapes whose bounding box is a square
of 35–70 % of the image side lying fully inside the image, and captions built from templates.

Determinism: every random choice goes through a `random.Random` passed in by the caller, so the
same seed gives the same scenes, captions and pixels on every machine (Python's Mersenne Twister
and its string seeding are specified; numpy only does arithmetic on fixed grids).

Train/held-out separation: seeds are namespaced. `make_rng(seed, "train")` seeds with the string
"vqclip.shapes/train/<seed>" and `make_rng(seed, "held-out")` with "vqclip.shapes/held-out/<seed>";
Python hashes string seeds with SHA-512 into a >512-bit integer, so the two families (and plain
small integer seeds) never share a generator state. Scene geometry is continuous, so a held-out
scene is, with probability 1, not a training scene either (the tests check it on real streams).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
IMAGE_SIZE = 64
MIN_SIZE, MAX_SIZE = 0.35, 0.70  # side of the shape's (square) bounding box, as a fraction of the image side
SMALL_BELOW, LARGE_ABOVE = 0.45, 0.60  # size words are used only outside this band
SUPERSAMPLE = 4  # 4×4 samples per pixel: light anti-aliasing, 17 coverage levels

# Position words only where they are unambiguous: a centre coordinate (fraction of the side) is
# "low" below 0.38, "high" above 0.62, "middle" within 0.06 of 0.5; in the gaps between, no word.
_LOW, _HIGH, _MID_HALF_WIDTH = 0.38, 0.62, 0.06
_POSITION_PHRASES = {  # canonical position -> the words a caption uses
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "centre": "in the centre", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
}

# "a" everywhere; _fix_articles turns it into "an" before a vowel ("an orange", "an orange square").
TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "{colour} {shape}",
    "a {colour} {shape} on a {background} background",
    "{colour} {shape} on a {background} background",
    "a {background} background with a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape} {position}",
    "a {colour} {shape} on a {background} background {position}",
    "a {size} {colour} {shape} {position} on a {background} background",
)


@dataclasses.dataclass(frozen=True)
class Scene:
    """One picture. size: side of the shape's square bounding box as a fraction of the image side;
    x, y: centre of that box as fractions of the side (x to the right, y downwards), so one scene
    draws at any resolution. A triangle has its apex at the top centre and its base at the bottom."""

    shape: str
    colour: str
    background: str
    size: float
    x: float
    y: float

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; valid: {', '.join(SHAPES)}")
        for name in (self.colour, self.background):
            if name not in PALETTE:
                raise ValueError(f"unknown colour {name!r}; valid: {', '.join(COLOURS)}")
        if self.colour == self.background:
            raise ValueError(f"shape and background are both {self.colour}: the shape would be invisible")


def make_rng(seed: int, split: str = "train") -> random.Random:
    """A generator for one split; "train" and "held-out" seeds never share a state (see module doc)."""
    if split not in ("train", "held-out"):
        raise ValueError(f"split must be 'train' or 'held-out', not {split!r}")
    return random.Random(f"vqclip.shapes/{split}/{int(seed)}")


def sample_scene(rng: random.Random) -> Scene:
    """A uniformly random scene: any shape, colour, other background colour, size, position inside."""
    shape = rng.choice(SHAPES)
    colour = rng.choice(COLOURS)
    background = rng.choice([c for c in COLOURS if c != colour])
    size = rng.uniform(MIN_SIZE, MAX_SIZE)
    x = rng.uniform(size / 2, 1 - size / 2)  # the bounding box, hence the shape, lies fully inside
    y = rng.uniform(size / 2, 1 - size / 2)
    return Scene(shape, colour, background, size, x, y)


# ---------------------------------------------------------------------------- drawing

def coverage(scene: Scene, size: int = IMAGE_SIZE, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by the shape, float32 [size, size], by point sampling."""
    n = size * supersample
    t = (np.arange(n, dtype=np.float64) + 0.5) / n  # sample centres in image-side units
    u, v = t[None, :], t[:, None]
    r = scene.size / 2
    if scene.shape == "circle":
        inside = (u - scene.x) ** 2 + (v - scene.y) ** 2 <= r * r
    elif scene.shape == "square":
        inside = (np.abs(u - scene.x) <= r) & (np.abs(v - scene.y) <= r)
    else:  # upright triangle, base = height = size: half-width grows from 0 at the apex to r at the base
        depth = v - (scene.y - r)
        inside = (depth >= 0) & (depth <= 2 * r) & (np.abs(u - scene.x) <= depth / 2)
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3), dtype=np.float32)


def draw(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as uint8 RGB, shape [size, size, 3] (wrap with PIL.Image.fromarray for a PIL image)."""
    alpha = coverage(scene, size)[..., None]
    fg = np.asarray(PALETTE[scene.colour], dtype=np.float32)
    bg = np.asarray(PALETTE[scene.background], dtype=np.float32)
    return np.rint(bg + (fg - bg) * alpha).astype(np.uint8)


def to_tensor(image) -> torch.Tensor:
    """uint8 HWC array (or PIL image) -> float tensor [3, H, W] in [0, 1]."""
    import torch

    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255)


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255).contiguous()


# ---------------------------------------------------------------------------- captions

def size_word(scene: Scene) -> str | None:
    """'small', 'large', or None for middling sizes (a word only where it is clearly true)."""
    if scene.size < SMALL_BELOW:
        return "small"
    if scene.size > LARGE_ABOVE:
        return "large"
    return None


def _band(c: float, low: str, mid: str, high: str) -> str | None:
    if c < _LOW:
        return low
    if c > _HIGH:
        return high
    if abs(c - 0.5) < _MID_HALF_WIDTH:
        return mid
    return None


def position_word(scene: Scene) -> str | None:
    """Canonical position ('top left', 'left', 'centre', ...) or None where either axis is ambiguous."""
    row = _band(scene.y, "top", "centre", "bottom")
    col = _band(scene.x, "left", "centre", "right")
    if row is None or col is None:
        return None
    if row == "centre" or col == "centre":
        return col if row == "centre" else row  # ("centre", "centre") -> "centre"
    return f"{row} {col}"


def _fix_articles(text: str) -> str:
    words = text.split()
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def applicable_templates(scene: Scene) -> list[str]:
    """The templates whose optional words (size, position) exist for this scene."""
    has = {"size": size_word(scene) is not None, "position": position_word(scene) is not None}
    return [t for t in TEMPLATES if all(has[k] or "{" + k + "}" not in t for k in has)]


def render(template: str, scene: Scene) -> str:
    """One template filled in for one scene, with correct articles."""
    position = position_word(scene)
    text = template.format(colour=scene.colour, shape=scene.shape, background=scene.background,
                           size=size_word(scene), position=position and _POSITION_PHRASES[position])
    return _fix_articles(text)


def all_captions(scene: Scene) -> list[str]:
    return [render(t, scene) for t in applicable_templates(scene)]


def caption(scene: Scene, rng: random.Random) -> str:
    """A caption for the scene from a template chosen uniformly among those that apply."""
    return render(rng.choice(applicable_templates(scene)), scene)


def parse_caption(text: str) -> dict:
    """What a caption (or a user's prompt) asks for: colour, shape, background, size, position.

    A field the text does not name is None. The background is the colour before the word
    "background", or else a colour after "on" that follows the shape ("a red circle on blue");
    the shape's colour is the nearest other colour before the shape word.
    """
    words = re.findall(r"[a-z]+", text.lower())
    shape_at = next((i for i, w in enumerate(words) if w in SHAPES), None)
    background_at = next((i for i, w in enumerate(words[:-1]) if w in PALETTE and words[i + 1] == "background"), None)
    if background_at is None and shape_at is not None:
        background_at = next((i for i in range(shape_at + 1, len(words))
                              if words[i] in PALETTE and "on" in words[max(shape_at, i - 2):i]), None)
    colours = [i for i, w in enumerate(words) if w in PALETTE and i != background_at]
    before = [i for i in colours if shape_at is not None and i < shape_at]
    colour_at = before[-1] if before else (colours[0] if colours else None)
    row = next((w for w in words if w in ("top", "bottom")), None)
    col = next((w for w in words if w in ("left", "right")), None)
    centre = any(w in ("centre", "center", "middle") for w in words)
    position = f"{row} {col}" if row and col else row or col or ("centre" if centre else None)
    return {
        "colour": words[colour_at] if colour_at is not None else None,
        "shape": words[shape_at] if shape_at is not None else None,
        "background": words[background_at] if background_at is not None else None,
        "size": next((w for w in words if w in ("small", "large")), None),
        "position": position,
    }


def scene_for(asked: dict) -> Scene | None:
    """A scene that draws what a parsed caption asks for (centred and middling unless its size and
    position words say otherwise), or None where the caption leaves the colour, shape or
    background open or asks for an invisible shape."""
    shape, colour, background = asked["shape"], asked["colour"], asked["background"]
    if None in (shape, colour, background) or colour == background:
        return None
    size = {"small": 0.4, "large": 0.65}.get(asked.get("size"), 0.5)
    position = asked.get("position") or "centre"
    edge = size / 2  # a shape's centre this far from an edge touches it: as far as a word can ask
    x = edge if "left" in position else 1 - edge if "right" in position else 0.5
    y = edge if "top" in position else 1 - edge if "bottom" in position else 0.5
    return Scene(shape, colour, background, size, x, y)


# ---------------------------------------------------------------------------- data streams

def captioned_scenes(rng: random.Random) -> Iterator[tuple[Scene, str]]:
    """Endless (scene, caption) from one generator: what stream and held_out draw, without pixels."""
    while True:
        scene = sample_scene(rng)
        yield scene, caption(scene, rng)


def stream(seed: int, size: int = IMAGE_SIZE) -> Iterator[tuple[np.ndarray, str, Scene]]:
    """Endless (image uint8 HWC, caption, scene) from the training family of seeds."""
    for scene, text in captioned_scenes(make_rng(seed, "train")):
        yield draw(scene, size), text, scene


def held_out(n: int = 512, seed: int = 0, size: int = IMAGE_SIZE) -> list[tuple[np.ndarray, str, Scene]]:
    """The fixed evaluation split: the first n items of the held-out family of seeds."""
    items = itertools.islice(captioned_scenes(make_rng(seed, "held-out")), n)
    return [(draw(scene, size), text, scene) for scene, text in items]


def batch(rng: random.Random, n: int, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """n random items: (float tensor [n, 3, size, size] in [0, 1], captions, scenes)."""
    scenes = [sample_scene(rng) for _ in range(n)]
    captions = [caption(s, rng) for s in scenes]
    return _stack([draw(s, size) for s in scenes]), captions, scenes


def shape_contrast_batch(rng: random.Random, groups: int,
                         size: int = IMAGE_SIZE) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """groups × len(SHAPES) items; each run of len(SHAPES) consecutive items shares colour,
    background, size, position and caption template, and differs only in shape.

    Why: with random batches a small CLIP learns colour at once but can lower its loss enough
    without shape; when the only difference between images in a batch is the shape, the
    contrastive loss cannot be lowered without it (the issue's prototype needed this).
    """
    scenes, captions = [], []
    for _ in range(groups):
        base = sample_scene(rng)
        template = rng.choice(applicable_templates(base))  # size/position words do not depend on shape
        for shape in SHAPES:
            scene = dataclasses.replace(base, shape=shape)
            scenes.append(scene)
            captions.append(render(template, scene))
    return _stack([draw(s, size) for s in scenes]), captions, scenes
