"""The contact sheet: every job's image as a thumbnail, captioned with prompt, preset, seed, score.

A failed job gets a grey tile with its error, so the sheet shows the whole batch at a glance.
Small images (the shapes world's 64 px) are enlarged with hard pixel edges, large ones reduced.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..outputs import save_png

THUMBNAIL = 128  # px, the side of each image's square
CAPTION_LINES = 4  # the prompt on up to two lines, then preset · seed, then score or error
LINE_HEIGHT = 14
PADDING = 6
BACKGROUND, TEXT, FAINT, FAILED = (255, 255, 255), (20, 20, 20), (110, 110, 110), (180, 30, 30)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def write_contact_sheet(path: Path, results: list, columns: int | None = None) -> Path:
    """Draw `results` (vqclip.batch.JobResult, in job order) into one PNG at `path`."""
    sheet = draw_contact_sheet(results, columns)
    save_png(path, sheet, {"contact_sheet": [result.job.name for result in results]})
    return path


def draw_contact_sheet(results: list, columns: int | None = None) -> Image.Image:
    count = max(len(results), 1)
    columns = columns or min(count, max(4, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    tile_w = THUMBNAIL + 2 * PADDING
    tile_h = THUMBNAIL + CAPTION_LINES * LINE_HEIGHT + 3 * PADDING
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for n, result in enumerate(results):
        left, top = (n % columns) * tile_w + PADDING, (n // columns) * tile_h + PADDING
        sheet.paste(_thumbnail(result), (left, top))
        lines = [(text, colour) for text, colour in caption_lines(result)]
        prompt, prompt_colour = lines.pop(0)
        lines = [(text, prompt_colour) for text in _wrap(draw, prompt, font, THUMBNAIL, 2)] + lines
        for line, (text, colour) in enumerate(lines):
            y = top + THUMBNAIL + PADDING // 2 + line * LINE_HEIGHT
            draw.text((left, y), _fit(draw, text, font, THUMBNAIL), fill=colour, font=font)
    return sheet


def caption_lines(result) -> list[tuple[str, tuple]]:
    caption = result.full_caption
    seed = caption.get("seed")
    second = " · ".join([str(caption.get("preset")), f"seed {'random' if seed is None else seed}"]
                        + [f"{key} {result.job.setting(key)}" for key in result.job.swept
                           if key not in ("prompt", "prompts", "preset", "seed")])
    if result.ok:
        score = "n/a" if result.score is None else f"{result.score:.3f}"
        third, colour = f"score {score} · {result.seconds:.0f} s", FAINT
    else:
        third, colour = f"failed: {result.error}", FAILED
    return [(str(caption.get("prompt", "")), TEXT), (second, FAINT), (third, colour)]


def _thumbnail(result) -> Image.Image:
    image_path = next((Path(p) for p in result.files if Path(p).suffix.lower() in IMAGE_SUFFIXES), None)
    if result.ok and image_path is not None and image_path.is_file():
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            # Enlarge small images with hard edges (their pixels are what matters), reduce large ones smoothly.
            scale = THUMBNAIL / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)
        tile = Image.new("RGB", (THUMBNAIL, THUMBNAIL), BACKGROUND)
        tile.paste(image, ((THUMBNAIL - image.width) // 2, (THUMBNAIL - image.height) // 2))
        return tile
    tile = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (225, 225, 225))
    ImageDraw.Draw(tile).text((8, THUMBNAIL // 2 - 6), "failed" if not result.ok else "no image",
                              fill=FAILED if not result.ok else FAINT, font=_font())
    return tile


def _font():
    try:
        return ImageFont.load_default(size=11)  # Pillow's bundled font, scalable where FreeType is built in
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int) -> list[str]:
    """text in at most `max_lines` lines of `width` pixels (the last one cut by _fit)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) < max_lines:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}"  # overflows: _fit cuts it with an ellipsis
    return lines or [""]


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """text cut with an ellipsis to fit `width` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"
