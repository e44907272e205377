"""The pixels of captioned images, brought to RGB squares of the training size.

Every mode Pillow reads is brought to 8-bit RGB by vqclip.outputs.load_image (palette, alpha over
white, 16-bit grey, EXIF rotation). The shorter side is then resized to the training size and the
centre cut out (a recipe may cut random crops of its own later). A file that cannot be read (corrupt,
truncated, missing, too large) is skipped and counted, never a crash mid-run: the recipes decode
every image once, up front, into one uint8 tensor (N × 3 × S × S: 3 kB per 32 px image, 196 kB
per 256 px one), and report the skipped files with their metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import UserError
from .pairs import read_pairs


@dataclass
class ImageSet:
    images: torch.Tensor  # N × 3 × size × size, uint8
    captions: list[str]
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def __len__(self) -> int:
        return len(self.captions)

    def floats(self, index=slice(None)) -> torch.Tensor:
        """Images in [0, 1], float32."""
        return self.images[index].float().div(255)

    def subset(self, indices: list[int]) -> ImageSet:
        return ImageSet(self.images[indices], [self.captions[i] for i in indices],
                        [self.sources[i] for i in indices])

    def report(self) -> dict:
        """What the metrics JSON says about the data: counts and the first few skipped files."""
        return {"images": len(self), "skipped": len(self.skipped),
                "skipped_examples": [f"{path}: {why}" for path, why in self.skipped[:5]]}


def decode(path: str | Path, size: int) -> torch.Tensor:
    """One image as a 3 × size × size float tensor in [0, 1]; UserError if it cannot be read."""
    from ..outputs import load_image

    if not Path(path).is_file():
        raise UserError(f"no such image file: {path}")
    image = load_image(path, what="training image")
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new = (max(size, round(height * scale)), max(size, round(width * scale)))
    if new != (height, width):
        image = F.interpolate(image, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return image[0, :, top:top + size, left:left + size]


def load_pairs(pairs: list[tuple[str, str]], size: int, *, progress: bool = True, what: str = "data") -> ImageSet:
    """Decode every pair's image at `size`; unreadable ones are skipped and listed in `.skipped`."""
    if size <= 0:
        raise UserError(f"the image size must be at least 1 pixel, not {size}")
    kept, captions, sources, skipped = [], [], [], []
    for path, caption in tqdm(pairs, disable=not progress, desc=f"reading {what}", unit="img"):
        try:
            kept.append(decode(path, size).mul(255).round().to(torch.uint8))
        except UserError as exc:
            skipped.append((path, str(exc)))
            continue
        captions.append(caption)
        sources.append(path)
    if not kept:
        first = f" (first: {skipped[0][1]})" if skipped else ""
        raise UserError(f"none of the {len(pairs)} images of {what} could be read{first}")
    return ImageSet(torch.stack(kept), captions, sources, skipped)


def load_images(source: str | Path, size: int, *, template: str | None = None, progress: bool = True) -> ImageSet:
    """read_pairs + load_pairs: a folder or list of captioned images, decoded at `size`."""
    return load_pairs(read_pairs(source, template), size, progress=progress, what=str(source))


def usable_pairs(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pairs whose image decodes, (path, why) of the others): for the streaming prior build."""
    kept, skipped = [], []
    for path, caption in pairs:
        try:
            decode(path, 1)
        except UserError as exc:
            skipped.append((path, str(exc)))
            continue
        kept.append((path, caption))
    return kept, skipped
