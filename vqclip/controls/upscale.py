"""Upscaling (`vqclip upscale IMAGE [PROMPT] --scale 2|4`): a picture enlarged, then refined by CLIP.

The picture is enlarged (Lanczos) to `scale` × its size, rounded to a multiple of 16 px so that
every VQGAN's factor divides it. It is encoded as the start of an ordinary run and refined toward
the prompt. Without a prompt, it is refined toward the picture itself as an image prompt. The
cutouts of the large canvas let CLIP put back detail that enlarging blurs, and the preset's
`init.weight` holds the run near the enlarged picture. It is a run like any other: its folder,
`--resume` and `--from` work as they do for `vqclip PROMPT`. docs/upscaling.md has the figures.
"""

from __future__ import annotations

from ..errors import UserError

SCALES = (2, 4)
MULTIPLE = 16  # every VQGAN factor divides it (2, 4, 8, 16)


def upscale_overrides(image: str, scale: int, prompts: list[str]) -> dict:
    """The config overrides that make a run an upscale of `image` (a path) by `scale`."""
    from ..outputs import read_picture

    if scale not in SCALES:
        raise UserError(f"--scale {scale}: vqclip upscales by 2 or 4 (upscale a 2× result again for 8)")
    with read_picture(image, "picture to upscale") as picture:
        width, height = picture.size
    size = [max(MULTIPLE, round(side * scale / MULTIPLE) * MULTIPLE) for side in (width, height)]
    overrides: dict = {"size": size, "init": {"mode": "image", "image": str(image)}}
    if prompts:
        overrides["prompts"] = list(prompts)
    else:
        overrides["image_prompts"] = [str(image)]
    return overrides


def upscale(image: str, prompt: str | list[str] | None = None, *, scale: int = 2, preset: str | None = "default",
            models=None, callback=None, **overrides):
    """Enlarge `image` `scale` times and refine it: `vqclip.upscale("small.png", scale=4, preset="shapes")`.

    Keyword arguments are config keys, as for `vqclip.generate`; returns its GenerationResult.
    """
    from ..config import build_config, merge_settings
    from ..generation import run

    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    # group by group: init={"weight": 5} keeps the upscale's init.image
    settings = merge_settings(upscale_overrides(image, scale, prompts), overrides, "arguments")
    return run(build_config(preset, settings), models=models, callback=callback)
