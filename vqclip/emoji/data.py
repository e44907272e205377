"""`vqclip data emoji OUT`: the named emoji of a colour emoji font, drawn on the shapes world's eight
colours, as a captioned folder.

Every single-code-point emoji that the font draws (wider than a few pixels) and Unicode names
("rocket", "slice of pizza", "cat face": the lower-case Unicode name) is composited at a random
scale (45–85 % of the side) and place on a plain background of one of the eight named colours of
the shapes world. Captions take turns between "a rocket on a blue background", "a picture of a
rocket" and "rocket". A fixed eighth of the (emoji, background) pairs, chosen by a hash, never
appears in training: OUT/held-out holds one image of each, so generation on them measures
composition never seen (zero-shot). OUT/labels.csv names the code point and background of every
image, for judging what a model draws.

The font is Debian's `fonts-noto-color-emoji` (SIL Open Font License) where it is installed, or any
CBDT/COLR colour emoji font given with --font. Nothing that vqclip ships reads the font at run time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..data.pairs import write_pair
from ..errors import UserError
from ..shapes.world import PALETTE

FONT_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",)
FONT_SIZES = (109, 136, 128, 160, 96, 72)  # bitmap fonts draw at their strikes only (Noto's: 109 px)
RANGES = ((0x2000, 0x2C00), (0x1F000, 0x1FB00))  # where single-code-point emoji live
MIN_WIDTH = 8  # of the 109 px drawing: narrower glyphs are marks, not pictures
SIZE = 64
SCALES = (0.45, 0.85)  # of the side: the drawing's longer side
HELD_OUT_EVERY = 8  # an eighth of the (emoji, background) pairs
NUMBER_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
PLURAL_WORDS = {"people", "men", "women", "children", "feet", "teeth", "mice", "geese"}


@dataclass(frozen=True)
class Emoji:
    code_point: int
    name: str  # lower-case Unicode name


def find_font(path: str | Path | None = None):
    """The font to draw with: `path`, else Debian's Noto Color Emoji; a one-line UserError otherwise."""
    from PIL import ImageFont

    if path is None:
        path = next((p for p in FONT_PATHS if Path(p).is_file()), None)
        if path is None:
            raise UserError("no colour emoji font found: install Debian's fonts-noto-color-emoji "
                            "(apt install fonts-noto-color-emoji), or pass --font PATH")
    elif not Path(path).is_file():
        raise UserError(f"--font {path}: no such file")
    for size in FONT_SIZES:
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:  # a bitmap font refuses sizes it has no strike for; not a font at all fails every size
            continue
    raise UserError(f"--font {path} is not a font Pillow can draw colour emoji from (a CBDT or COLR TrueType font)")


def draw(character: str, font):
    """The character drawn in colour on transparency, cut to what it covers (None: nothing drawn)."""
    from PIL import Image, ImageDraw

    side = int(font.size * 1.5)
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((font.size // 4, font.size // 4), character, font=font, embedded_color=True)
    box = image.getbbox()
    return image.crop(box) if box else None


def named_emoji(font) -> list[Emoji]:
    """Every single-code-point emoji the font draws as a picture and Unicode names, in code point order."""
    missing = draw("\ue000", font)  # a private-use point: what the font draws for a character it lacks
    missing = missing.tobytes() if missing is not None else None
    found = []
    for first, end in RANGES:
        for code_point in range(first, end):
            character = chr(code_point)
            name = unicodedata.name(character, "")
            if not name or unicodedata.category(character).startswith("M"):
                continue
            picture = draw(character, font)
            if picture is None or picture.width < MIN_WIDTH * font.size / 109 or picture.tobytes() == missing:
                continue
            found.append(Emoji(code_point, name.lower()))
    return found


def held_out(emoji: Emoji, background: str) -> bool:
    """Whether the pair is kept out of training: fixed by a hash of the pair, not by the font's order."""
    digest = hashlib.sha256(f"{emoji.code_point:x}:{background}".encode()).digest()
    return digest[0] % HELD_OUT_EVERY == 0


def with_article(name: str) -> str:
    """'a rocket', 'an apple', 'a slice of pizza'; a name that counts or names several stays bare
    ('two men holding hands', 'scissors'). The head noun decides: the words before 'with' or 'of'."""
    head = name.split(" with ")[0].split(" of ")[0].split()
    plural = head[-1] in PLURAL_WORDS or head[-1].endswith("s") and not head[-1].endswith(("ss", "us", "is"))
    if head[0] in NUMBER_WORDS | PLURAL_WORDS or head[0].isdigit() or plural:
        return name
    vowel = head[0][0] in "aeiou" and not head[0].startswith(("uni", "use", "eu", "one"))
    return f"{'an' if vowel else 'a'} {name}"


def caption(emoji: Emoji, background: str, turn: int = 0) -> str:
    """The caption of the `turn`-th image: the phrasings take turns (the first, which names the
    background, is the held-out images' and the eval's prompt)."""
    forms = (f"{with_article(emoji.name)} on {with_article(background + ' background')}",
             f"a picture of {with_article(emoji.name)}",
             emoji.name)
    return forms[turn % len(forms)]


def compose(picture, background: str, rng: random.Random, size: int = SIZE):
    """The drawing at a random scale and place on a plain background of the named colour."""
    from PIL import Image

    scale = rng.uniform(*SCALES) * size / max(picture.size)
    width, height = max(1, round(picture.width * scale)), max(1, round(picture.height * scale))
    small = picture.resize((width, height), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), PALETTE[background])
    canvas.paste(small, (rng.randint(0, size - width), rng.randint(0, size - height)), small)
    return canvas


def write_emoji(out: str | Path, *, font: str | Path | None = None, per_pair: int = 1, size: int = SIZE,
                seed: int = 0, limit: int | None = None) -> dict:
    """Write the emoji under OUT (each file atomically); returns {split: count, "emoji": how many}.

    Each training (emoji, background) pair is drawn `per_pair` times; each held-out pair once.
    `limit` keeps the first emoji only (tests)."""
    if per_pair < 1 or size < 16:
        raise UserError(f"--per-pair must be at least 1 and --size at least 16, not {per_pair} and {size}")
    drawing_font = find_font(font)
    emoji = named_emoji(drawing_font)[:limit]
    rng = random.Random(seed)
    out, counts, rows = Path(out), {"train": 0, "held-out": 0}, []
    for item in emoji:
        picture = draw(chr(item.code_point), drawing_font)
        for background in PALETTE:
            split = "held-out" if held_out(item, background) else "train"
            for _ in range(1 if split == "held-out" else per_pair):
                name = f"{counts[split]:05d}"
                turn = 0 if split == "held-out" else counts[split]
                write_pair(out / split, name, compose(picture, background, rng, size), caption(item, background, turn))
                rows.append((split, f"{split}/{name}.png", f"{item.code_point:x}", item.name, background))
                counts[split] += 1
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("split", "file", "code_point", "name", "background"))
    writer.writerows(rows)
    atomic_write_text(out / "labels.csv", text.getvalue())
    return {**counts, "emoji": len(emoji)}
