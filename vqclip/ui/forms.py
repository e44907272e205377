"""The page's form → a run config, with the same rules as the command line.

Precedence as on the command line: defaults ← preset ← the form's fields ← its `key=value`
lines. The form's numbers arrive as floats or None from the browser; a value that is not a
whole number is bad input, reported as one line, like every other mistake. Unlike the command
line, the page names shipped presets only and files only under the outputs folder or its own
uploads (access.py): whoever opens the page is not trusted with the server's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ..config import build_config
from ..errors import UserError
from .access import check_page_config, shipped_preset
from .mask_editor import editor_parts, mask_path, parse_outpaint, write_mask


@dataclass
class Form:
    """What the Generate tab holds; every field is optional except the prompts."""

    prompts: str = ""  # one prompt per line, "text[:weight[:stop]]", "a | b", "a ^ b"
    preset: str = "shapes"
    steps: float | None = None
    width: float | None = None
    height: float | None = None
    seed: float | None = None  # None: a random seed, recorded with the run
    cutn: float | None = None
    init_image: Any = None  # the image editor's value (the upload and the strokes painted on it), or a path
    image_prompts: list[str] = field(default_factory=list)  # file paths
    image_prompt_weight: float | None = 1.0
    extra: str = ""  # key=value lines: any other config key
    mask_invert: bool = False  # change what is not painted
    outpaint: str = ""  # "LEFT TOP RIGHT BOTTOM" pixels to grow the canvas by
    tile: bool = False  # a seamless tile (docs/tiles.md)
    symmetry: str = "none"  # none | horizontal | vertical | both
    palette: str = ""  # hex colours, comma-separated: "#dc1e1e, #1e46dc"


def form_defaults(preset: str) -> dict:
    """The form's fields as a preset sets them (the page fills them in when the preset changes)."""
    config = build_config(preset)
    return {"steps": int(config.steps), "width": int(config.size[0]), "height": int(config.size[1]),
            "seed": config.seed, "cutn": int(config.cutn)}


def prompt_lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def extra_lines(text: str) -> list[str]:
    """`key=value` lines (blank lines and # comments skipped); anything else is an error."""
    lines = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, _ = line.partition("=")
        if not eq or not all(part.strip().isidentifier() for part in key.split(".")):
            raise UserError(f"more settings: {line[:60]!r} is not key=value (e.g. lr=0.2 or init.weight=0.5)")
        lines.append(line)
    return lines


def whole_number(name: str, value, minimum: int | None = None) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a whole number, not {value!r}") from None
    if not number.is_integer():
        raise UserError(f"{name} must be a whole number, not {value}")
    if minimum is not None and number < minimum:
        raise UserError(f"{name} must be at least {minimum}, not {int(number)}")
    return int(number)


def _edit_overrides(form: Form, outputs_root: str, overrides: dict):
    """The init image and the edit (painted mask, outpainting) into `overrides`; returns the painted region."""
    image, painted = editor_parts(form.init_image)
    if image:
        overrides["init"] = {"mode": "image", "image": image}
    mask = {"outpaint": parse_outpaint(form.outpaint)}
    if painted is not None:
        mask.update(image=str(mask_path(painted, outputs_root)), invert=bool(form.mask_invert))
    if any(value is not None for value in mask.values()):
        overrides["mask"] = mask
    return painted


def _form_overrides(form: Form, overrides: dict) -> None:
    """The picture's form (tile, symmetry, palette) into `overrides`, where the fields ask for one."""
    if form.tile:
        overrides["tile"] = True
    if form.symmetry and form.symmetry != "none":
        overrides["symmetry"] = form.symmetry
    colours = [colour.strip() for colour in (form.palette or "").split(",") if colour.strip()]
    if colours:
        overrides["palette"] = {"colours": colours}


def config_from_form(form: Form, outputs_root: str, upload_root: str | None = None) -> DictConfig:
    """The resolved config for a new run, or a UserError naming the field that is wrong.

    Files must lie under outputs_root or upload_root (Gradio's upload cache; None: no uploads).
    """
    prompts = prompt_lines(form.prompts)
    if not prompts and not form.image_prompts:
        raise UserError("type a prompt first (one per line, e.g. a red circle on a blue background)")
    if not form.preset:
        raise UserError("choose a preset")
    shipped_preset(form.preset)
    overrides: dict = {"prompts": prompts, "outputs_root": str(outputs_root), "quiet": True}
    steps = whole_number("steps", form.steps, 1)
    width, height = whole_number("width", form.width, 1), whole_number("height", form.height, 1)
    cutn = whole_number("cutn", form.cutn, 1)
    seed = whole_number("seed", form.seed, 0)
    if steps is not None:
        overrides["steps"] = steps
    if (width is None) != (height is None):
        raise UserError("give both width and height, or neither (the preset's size)")
    if width is not None:
        overrides["size"] = [width, height]
    if cutn is not None:
        overrides["cutn"] = cutn
    if seed is not None:
        overrides["seed"] = seed
    _form_overrides(form, overrides)
    painted = _edit_overrides(form, outputs_root, overrides)
    if form.image_prompts:
        weight = form.image_prompt_weight if form.image_prompt_weight is not None else 1.0
        overrides["image_prompts"] = [f"{path}:{float(weight)}" for path in form.image_prompts]
    config = build_config(form.preset, overrides, extra_lines(form.extra))
    check_page_config(config, outputs_root, upload_root)
    if painted is not None:
        write_mask(painted, outputs_root)  # once the settings are known to be good
    return config
