"""The emoji judge: which emoji an image shows, and on which background, without the project's models.

The background is the palette colour nearest to the median of the image's border. The drawing is
what differs from it: its box is cut out, padded square with the background and brought to
SIDE × SIDE, then compared with every emoji of the font drawn the same way on that background
(mean squared difference; the font's drawings are made once and kept). The ranking gives top-1
and top-5. `ceiling` measures the judge on real renders made blurry and small, as a generated image
may be: no model can be judged better than that.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np

from . import data

SIDE = 24  # the compared square: enough for an emoji's silhouette and colours, cheap over ~1,400 of them
FOREGROUND = 48.0  # RGB distance from the background above which a pixel belongs to the drawing


@dataclass
class Verdict:
    background: str
    ranking: list[int]  # indices into the judge's emoji, best first (empty: nothing drawn)


class Judge:
    """The font's emoji as templates: premultiplied colour and coverage at SIDE × SIDE."""

    def __init__(self, font=None, emoji: list[data.Emoji] | None = None):
        font = font if font is not None else data.find_font()
        self.emoji = emoji if emoji is not None else data.named_emoji(font)
        pictures = [np.asarray(square(data.draw(chr(item.code_point), font)), dtype=np.float32) / 255
                    for item in self.emoji]
        stacked = np.stack(pictures)  # N × SIDE × SIDE × 4
        self.alpha = stacked[..., 3:]
        self.colour = stacked[..., :3] * self.alpha
        self.palette = {name: np.asarray(rgb, dtype=np.float32) / 255 for name, rgb in data.PALETTE.items()}

    def background_of(self, pixels: np.ndarray) -> str:
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        median = np.median(border, axis=0) / 255
        return min(self.palette, key=lambda name: float(((self.palette[name] - median) ** 2).sum()))

    def __call__(self, image) -> Verdict:
        """The verdict on one image (PIL, a [3, H, W] tensor in [0, 1], an HWC array)."""
        from PIL import Image

        from ..shapes.judge import to_rgb_array

        pixels = to_rgb_array(image).astype(np.float32)
        background = self.background_of(pixels)
        far = np.sqrt(((pixels - self.palette[background] * 255) ** 2).sum(-1)) > FOREGROUND
        if not far.any():
            return Verdict(background, [])
        rows, columns = np.nonzero(far)
        crop = Image.fromarray(pixels[rows.min():rows.max() + 1, columns.min():columns.max() + 1].round()
                               .astype(np.uint8))
        seen = np.asarray(square(crop, tuple(data.PALETTE[background])), dtype=np.float32)[..., :3] / 255
        templates = self.colour + (1 - self.alpha) * self.palette[background]
        distance = ((templates - seen) ** 2).mean(axis=(1, 2, 3))
        return Verdict(background, np.argsort(distance).tolist())

    def rank_of(self, verdict: Verdict, emoji: data.Emoji) -> int | None:
        """Where the emoji stands in the verdict's ranking (0: first), None when nothing was drawn."""
        index = self.emoji.index(emoji)
        return verdict.ranking.index(index) if verdict.ranking else None


def square(picture, fill=(0, 0, 0, 0)):
    """A picture padded square (centred, with `fill`) and brought to SIDE × SIDE, as RGBA."""
    from PIL import Image

    picture = picture.convert("RGBA")
    side = max(picture.size)
    canvas = Image.new("RGBA", (side, side), fill if len(fill) == 4 else (*fill, 255))
    canvas.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2), picture)
    return canvas.resize((SIDE, SIDE), Image.Resampling.BOX)


@functools.lru_cache(maxsize=1)
def shared_judge() -> Judge:
    return Judge()


def ceiling(judge: Judge, pairs: list[tuple[data.Emoji, str]], *, blur: float = 1.0, scale: float = 0.5,
            seed: int = 0) -> dict:
    """The judge on real renders of `pairs` (as the data draws them), blurred (Gaussian, `blur` px) and
    brought down to `scale` of the side and back up: top-1, top-5 and background accuracy."""
    from PIL import Image, ImageFilter

    font, rng = data.find_font(), random.Random(seed)
    top1 = top5 = backgrounds = 0
    for emoji, background in pairs:
        image = data.compose(data.draw(chr(emoji.code_point), font), background, rng)
        small = max(8, round(image.width * scale))
        image = image.filter(ImageFilter.GaussianBlur(blur)).resize((small, small), Image.Resampling.BILINEAR)
        verdict = judge(image.resize((data.SIZE, data.SIZE), Image.Resampling.BILINEAR))
        rank = judge.rank_of(verdict, emoji)
        top1 += rank == 0
        top5 += rank is not None and rank < 5
        backgrounds += verdict.background == background
    count = len(pairs)
    return {"top1": round(top1 / count, 4), "top5": round(top5 / count, 4),
            "background": round(backgrounds / count, 4), "images": count, "blur": blur, "scale": scale}
