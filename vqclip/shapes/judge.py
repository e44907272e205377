"""The pixel judge: which colour, shape and background an image of the shapes world shows.

The rules are the issue's, so that a score means the same thing everywhere:
1. snap every pixel to the nearest palette colour (Euclidean distance in RGB);
2. background = the commonest colour on the image border;
3. foreground = the commonest other colour in the whole image (none: the image is flat);
4. shape from the largest 4-connected blob of the foreground colour, by its fill ratio
   (blob pixels / bounding-box pixels) and its aspect (box width / box height).

Every shape of the world has a square bounding box, and ideal fill ratios circle π/4 ≈ 0.785,
square 1.0, triangle (base = height) 0.5. The thresholds sit at the midpoints between them:
fill ≥ 0.89 square, ≥ 0.64 circle, ≥ 0.40 triangle (below 0.40 the blob is too sparse to be any
of them: a dither, a ring, a scribble). The aspect must lie in [0.75, 1.33]: a blob whose box
is clearly not square is a bar or a smear, not one of the world's shapes. A blob under 1 % of the
image is noise, not a shape. 4-connectivity (not 8) so that a checkerboard-like dither, which a
small CLIP can come to like, does not merge into one sparse "triangle".

Works at any resolution, on PIL images, uint8 or float numpy arrays (HWC, or CHW with 3
channels) and torch tensors in [0, 1] of shape [3, H, W] or [1, 3, H, W]. numpy only, no scipy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .world import PALETTE, parse_caption

SQUARE_MIN_FILL = 0.89    # between circle 0.785 and square 1.0
CIRCLE_MIN_FILL = 0.64    # between triangle 0.5 and circle 0.785
TRIANGLE_MIN_FILL = 0.40  # below: too sparse for any shape of the world
ASPECT_RANGE = (0.75, 1.0 / 0.75)
MIN_BLOB_FRACTION = 0.01

_NAMES = tuple(PALETTE)
_RGB = np.asarray([PALETTE[n] for n in _NAMES], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What the pixels show. colour/shape are None when there is no foreground or no shape-like
    blob; the numbers describe the largest foreground blob (0.0 when there is none)."""

    colour: str | None
    shape: str | None
    background: str
    fill_ratio: float
    aspect: float
    blob_fraction: float  # blob pixels / image pixels


def to_rgb_array(image) -> np.ndarray:
    """Any supported image -> float32 [H, W, 3] on the 0..255 scale."""
    if hasattr(image, "detach"):  # a torch tensor in [0, 1]
        t = image.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a tensor [3, H, W] or [1, 3, H, W], got {list(t.shape)}")
        return (t.clamp(0, 1) * 255).permute(1, 2, 0).numpy().astype(np.float32)
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] not in (3, 4) and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)  # CHW
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image [H, W, 3], got an array of shape {array.shape}")
    scale = 255.0 if np.issubdtype(array.dtype, np.floating) else 1.0  # float arrays are in [0, 1]
    return (array[..., :3].astype(np.float32) * scale).clip(0, 255)


def snap(rgb: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for every pixel: int [H, W] (indices into PALETTE order)."""
    d = ((rgb[:, :, None, :] - _RGB[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels of a bool mask: int [H, W], -1 off the mask, else the index
    of one pixel of the component.

    Why this way: min-label propagation with numpy shifts, plus pointer jumping (a label is the
    index of a pixel of the same component, so taking that pixel's label keeps the invariant and
    halves long chains), converges in a few dozen vectorised passes even at 256×256.
    """
    h, w = mask.shape
    big = h * w
    labels = np.where(mask, np.arange(big).reshape(h, w), big)
    flat_mask = mask.ravel()
    while True:
        new = labels.copy()
        np.minimum(new[1:], labels[:-1], out=new[1:])
        np.minimum(new[:-1], labels[1:], out=new[:-1])
        np.minimum(new[:, 1:], labels[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], labels[:, 1:], out=new[:, :-1])
        new = np.where(mask, new, big)
        flat = new.ravel()
        flat[flat_mask] = flat[flat[flat_mask]]  # pointer jumping
        if np.array_equal(new, labels):
            return np.where(mask, labels, -1)
        labels = new


def classify(fill_ratio: float, aspect: float, blob_fraction: float) -> str | None:
    """The shape that a blob with these measures is, or None (thresholds in the module doc)."""
    if blob_fraction < MIN_BLOB_FRACTION or not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
        return None
    if fill_ratio >= SQUARE_MIN_FILL:
        return "square"
    if fill_ratio >= CIRCLE_MIN_FILL:
        return "circle"
    if fill_ratio >= TRIANGLE_MIN_FILL:
        return "triangle"
    return None


def judge(image) -> Judgement:
    """Judge one image by its pixels (see the module doc for the rules)."""
    labels = snap(to_rgb_array(image))
    h, w = labels.shape
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES))
    counts[background] = 0
    if counts.max() == 0:  # a flat image: nothing but background
        return Judgement(None, None, _NAMES[background], 0.0, 0.0, 0.0)
    foreground = int(counts.argmax())
    blobs = components(labels == foreground)
    ids, sizes = np.unique(blobs[blobs >= 0], return_counts=True)
    ys, xs = np.nonzero(blobs == ids[sizes.argmax()])
    box_h, box_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill_ratio = float(len(ys) / (box_h * box_w))
    aspect = float(box_w / box_h)
    blob_fraction = float(len(ys) / (h * w))
    return Judgement(_NAMES[foreground], classify(fill_ratio, aspect, blob_fraction), _NAMES[background],
                     fill_ratio, aspect, blob_fraction)


def score_against(judgement: Judgement, caption_or_dict) -> dict:
    """{colour, shape, background: True/False, or None where the caption does not name it}."""
    expected = parse_caption(caption_or_dict) if isinstance(caption_or_dict, str) else caption_or_dict
    return {key: None if expected.get(key) is None else getattr(judgement, key) == expected[key]
            for key in ("colour", "shape", "background")}
