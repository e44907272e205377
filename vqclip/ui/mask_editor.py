"""The page's init image editor: upload a picture, paint the region to change with a brush.

Gradio's ImageEditor hands over its background (the uploaded picture) and the layers painted on
it; the strokes of every layer, wherever they are opaque, are the mask (white = may change, as
vqclip/mask.py reads it). The mask is written under the outputs folder, named by its content, so
that the run, its metadata and `--from` refer to a file that stays.

The uploaded picture never reaches the server by itself: the browser decodes it onto the editor's
canvas, and what arrives is that canvas exported. Painted on before the picture got there (a slow
machine, a quick hand), the canvas is still the editor's empty one, one colour at CANVAS_SIZE, and
that is what the editor sends as the background. Such a value is refused in one line, never run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserError
from ..outputs import read_picture, save_png

MASK_FOLDER = "masks"  # under the outputs folder
OUTPAINT_STEP = 32  # pixels an outpaint button adds on its side
CANVAS_SIZE = (800, 800)  # the editor's empty canvas (Gradio's default), width × height


def is_blank_canvas(picture: Image.Image) -> bool:
    """Whether `picture` is the editor's empty canvas: CANVAS_SIZE, one colour all over (white, or
    dark grey in a dark theme)."""
    return picture.size == CANVAS_SIZE and all(low == high for low, high in picture.convert("RGBA").getextrema())


def editor_parts(value) -> tuple[str | None, np.ndarray | None]:
    """(the background's path, H × W booleans painted on it, or None when nothing is painted).

    `value` is the editor's value ({"background", "layers", "composite"} of file paths), or a plain
    path (an API caller's init image, unpainted), or None. A background that is the editor's blank
    canvas (the picture had not reached it) is a UserError."""
    if not value:
        return None, None
    if isinstance(value, (str, Path)):
        return str(value), None
    background = value.get("background") if isinstance(value, dict) else None
    if not background:
        return None, None
    with read_picture(background, "init image") as picture:
        if is_blank_canvas(picture):
            width, height = CANVAS_SIZE
            raise UserError(f"the init image had not reached the editor when it was painted on (it sent its blank "
                            f"{width}×{height} canvas): wait until your picture shows in the editor, then paint again")
        size = picture.size
    painted = None
    for layer in value.get("layers") or []:
        with read_picture(layer, "painted layer") as picture:
            # a layer made before the picture reached the canvas has the canvas's size: scale it onto the picture
            alpha = np.array(picture.convert("RGBA").getchannel("A").resize(size, Image.NEAREST)) > 0
        painted = alpha if painted is None else painted | alpha
    return str(background), painted if painted is not None and painted.any() else None


def mask_levels(painted: np.ndarray) -> np.ndarray:
    return np.where(painted, 255, 0).astype(np.uint8)


def mask_path(painted: np.ndarray, outputs_root: str | Path) -> Path:
    """Where the painted region is written as a mask (white = may change): named by its content."""
    levels = mask_levels(painted)
    digest = hashlib.sha256(levels.tobytes() + repr(levels.shape).encode()).hexdigest()[:16]
    return Path(outputs_root) / MASK_FOLDER / f"{digest}.png"


def write_mask(painted: np.ndarray, outputs_root: str | Path) -> Path:
    path = mask_path(painted, outputs_root)
    if not path.is_file():
        save_png(path, Image.fromarray(mask_levels(painted), mode="L"), {"what": "a mask painted on the page"})
    return path


def parse_outpaint(text: str) -> list[int] | None:
    """"LEFT TOP RIGHT BOTTOM" in pixels (blank, or all zero: none)."""
    words = (text or "").replace(",", " ").split()
    if not words:
        return None
    try:
        sides = [int(word) for word in words]
    except ValueError:
        raise UserError(f"outpaint: {text!r} is not four whole numbers of pixels (left top right bottom)") from None
    if len(sides) != 4:
        raise UserError(f"outpaint takes four numbers of pixels, left top right bottom: not {text!r}")
    return sides if any(sides) else None


def grow(text: str, side: int, step: int = OUTPAINT_STEP) -> str:
    """An outpaint button: `step` more pixels on `side` (0 left, 1 top, 2 right, 3 bottom)."""
    try:
        sides = parse_outpaint(text) or [0, 0, 0, 0]
    except UserError:
        sides = [0, 0, 0, 0]
    sides[side] += step
    return " ".join(map(str, sides))


def preview(value, invert: bool, outpaint_text: str) -> np.ndarray | None:
    """The start image as the edit sees it: the kept region dimmed, the region to change (painted,
    inverted, or the outpainted border) at full strength with a magenta tint; None while there is
    nothing to show, or nothing Start would take (Start says why)."""
    try:
        background, painted = editor_parts(value)
    except UserError:
        return None
    if background is None:
        return None
    with read_picture(background, "init image") as picture:
        pixels = np.array(picture.convert("RGB"), dtype=np.float32)
    change = painted if painted is not None else np.zeros(pixels.shape[:2], dtype=bool)
    if invert and painted is not None:
        change = ~change
    try:
        sides = parse_outpaint(outpaint_text) or [0, 0, 0, 0]
    except UserError:
        sides = [0, 0, 0, 0]
    left, top, right, bottom = (max(0, side) for side in sides)
    pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    change = np.pad(change, ((top, bottom), (left, right)), constant_values=True)
    tint = np.array([255, 0, 255], dtype=np.float32)
    shown = np.where(change[..., None], 0.6 * pixels + 0.4 * tint, 0.35 * pixels)
    return shown.round().clip(0, 255).astype(np.uint8)


# --- the controls on the Generate tab (gradio is passed in: it is imported on first use) -------------
SIDES = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class EditControls:
    editor: Any  # ImageEditor: the init image, and the strokes painted on it
    invert: Any  # Checkbox
    outpaint: Any  # Textbox "LEFT TOP RIGHT BOTTOM"
    grow_buttons: list[Any]  # one per side, in SIDES' order
    region: Any  # Image: the preview of the region to change


def build_edit_controls(gr) -> EditControls:
    with gr.Accordion("Edit an image: paint the region to change, or outpaint", open=False, elem_id="edit"):
        # png, not Gradio's default webp: the kept pixels must reach the run unchanged
        editor = gr.ImageEditor(label="Init image (paint the region to change with the brush)", type="filepath",
                                format="png", sources=["upload"], transforms=[], layers=False, canvas_size=CANVAS_SIZE,
                                brush=gr.Brush(colors=["#ff00ff"], default_color="#ff00ff", color_mode="fixed"),
                                elem_id="init-image")
        with gr.Row():
            invert = gr.Checkbox(False, label="Change what is not painted", elem_id="mask-invert")
            outpaint = gr.Textbox("", label="Outpaint (px): left top right bottom", placeholder="0 0 32 0",
                                  elem_id="outpaint")
        with gr.Row():
            grow_buttons = [gr.Button(f"Outpaint {side} +{OUTPAINT_STEP}", size="sm", elem_id=f"outpaint-{side}")
                            for side in SIDES]
        region = gr.Image(label="Region to change (magenta); the rest is kept", type="numpy", format="png",
                          interactive=False, height=200, elem_id="mask-preview")
    return EditControls(editor, invert, outpaint, grow_buttons, region)


def wire_edit_controls(controls: EditControls, fast: dict) -> None:
    inputs = [controls.editor, controls.invert, controls.outpaint]
    for component in inputs:
        component.change(preview, inputs, controls.region, api_name=False, **fast)
    for side, button in enumerate(controls.grow_buttons):
        button.click(partial(grow, side=side), controls.outpaint, controls.outpaint, api_name=False, **fast)
