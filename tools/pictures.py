"""Make the pictures in README.md and docs/ again, from the shipped shapes and digits worlds (offline).

    python tools/pictures.py                  # all of them
    python tools/pictures.py contact-sheet    # or some: contact-sheet, morph, masks, ui, digits, tiles, palettes,
                                              # upscale, flicker

Each takes a minute or two on 2 CPU cores. `ui` drives the web page in Debian's Chromium
(`apt-get install chromium`) through the browser test, which writes the screenshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The batch shown in docs/batch.md (its last job fails on purpose: a failed job is drawn in red).
BATCH = {"defaults": {"preset": "shapes", "steps": 30},
         "grid": {"prompt": ["a red circle on a blue background", "a blue square on a yellow background"],
                  "seed": [1, 2], "cutn": [8, 16]},
         "jobs": [{"prompt": "a green triangle on a white background", "seed": 3},
                  {"prompt": "a purple circle", "preset": "shapez"}]}

# The keys of docs/video-morph.gif: drawn by the shapes world, then morphed in latent space.
MORPH_KEYS = [("circle", "red", "white"), ("square", "blue", "yellow"), ("triangle", "green", "white"),
              ("circle", "red", "white")]


def contact_sheet(work: Path) -> None:
    import vqclip.batch

    out = work / "sweep"
    for result in vqclip.batch.run(BATCH, out=out):
        print(f"  {result.job.name}: {result.status}", flush=True)
    shutil.copyfile(out / "contact_sheet.png", DOCS / "batch-contact-sheet.png")


def morph(work: Path) -> None:
    from PIL import Image

    from vqclip import video
    from vqclip.shapes.world import Scene, draw

    keys = []
    for shape, colour, background in MORPH_KEYS:
        keys.append(work / f"{colour}-{shape}.png")
        Image.fromarray(draw(Scene(shape, colour, background, 0.6, 0.5, 0.5))).save(keys[-1])
    gif = DOCS / "video-morph.gif"
    video.interpolate([str(key) for key in keys], preset="shapes-morph", output=str(gif), seed=1,
                      video={"between": 10}, run_dir=str(work / "morph"), quiet=True)
    gif.with_name(gif.name + ".json").unlink(missing_ok=True)  # the settings file written beside a video


def masks(work: Path) -> None:
    """docs/masks.png: a blue square, the right half masked, "a red circle" drawn there (composite
    pixels, then latent, then started from the prior), and the picture outpainted to the right; 3×
    with sharp pixels."""
    from PIL import Image

    import vqclip

    start, mask = work / "blue.png", work / "right.png"
    picture = Image.new("RGB", (64, 64), (245, 245, 245))
    picture.paste((30, 70, 220), (8, 18, 28, 46))
    picture.save(start)
    Image.new("L", (64, 64), 0).save(mask)
    Image.new("L", (32, 64), 255).save(work / "half.png")
    right = Image.open(mask)
    right.paste(Image.open(work / "half.png"), (32, 0))
    right.save(mask)
    common = dict(preset="shapes", seed=1, init={"mode": "image", "image": str(start)}, quiet=True)
    edits = [("before", picture), ("mask", right.convert("RGB"))]
    for label, settings in (("composite=pixels", {"image": str(mask)}),
                            ("composite=latent", {"image": str(mask), "composite": "latent"}),
                            ("fill=prior", {"image": str(mask), "fill": "prior"}),
                            ("--outpaint 0 0 32 0", {"outpaint": [0, 0, 32, 0]})):
        result = vqclip.generate("a red circle", mask=settings, run_dir=str(work / label.strip("-")), **common)
        edits.append((label, Image.open(result.final_path).convert("RGB")))
    labelled_row(edits, DOCS / "masks.png", scale=3)


def labelled_row(pictures, path: Path, scale: int) -> None:
    """(label, PIL image) pairs side by side, enlarged `scale` times with sharp pixels, framed and
    labelled underneath."""
    from PIL import Image, ImageDraw

    gap, height = 8, max(image.height for _, image in pictures) * scale
    width = sum(image.width * scale for _, image in pictures) + gap * (len(pictures) - 1)
    sheet = Image.new("RGB", (width, height + 18), (255, 255, 255))
    draw, x = ImageDraw.Draw(sheet), 0
    for label, image in pictures:
        sheet.paste(image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST), (x, 0))
        draw.rectangle((x, 0, x + image.width * scale - 1, image.height * scale - 1), outline=(160, 160, 160))
        draw.text((x + 2, height + 4), label, fill=(0, 0, 0))
        x += image.width * scale + gap
    sheet.save(path, optimize=True)


TILE_PROMPT = "a red circle on a blue background"


def tiles(work: Path) -> None:
    """docs/tiles.png: the shapes world from random codes, 60 steps, seed 2, as a plain run and as a
    tile, each repeated 3 × 3 as final-3x3.png shows it."""
    from PIL import Image

    import vqclip

    common = dict(preset="shapes", seed=2, steps=60, init={"mode": "random", "weight": 0.0}, quiet=True)
    rows = []
    for label, tile in (("plain run, repeated 3 x 3", False), ("--tile: final-3x3.png", True)):
        result = vqclip.generate(TILE_PROMPT, tile=tile, run_dir=str(work / str(tile)), **common)
        image = Image.open(result.final_path).convert("RGB")
        repeated = Image.new("RGB", (image.width * 3, image.height * 3))
        for row in range(3):
            for column in range(3):
                repeated.paste(image, (column * image.width, row * image.height))
        rows.append((label, repeated))
    labelled_row(rows, DOCS / "tiles.png", scale=2)


def palettes(work: Path) -> None:
    """docs/palettes.png: one prompt and seed as a plain run, with a palette (indexed, then dithered
    to colours the world's VQGAN cannot draw) and with mirror symmetry."""
    from PIL import Image

    import vqclip

    off = {"colours": ["#264653", "#e9c46a", "#e76f51"], "quantize": True}
    runs = [("plain", {}), ("--palette (world's red, blue)", {"palette": {"colours": ["#dc1e1e", "#1e46dc"],
                                                                             "quantize": True}}),
            ("3 other colours, indexed", {"palette": off}),
            ("... dithered", {"palette": {**off, "dither": True}}),
            ("--symmetry both", {"symmetry": "both"})]
    pictures = []
    for index, (label, settings) in enumerate(runs):
        result = vqclip.generate(TILE_PROMPT, preset="shapes", seed=1, quiet=True, run_dir=str(work / str(index)),
                                 **settings)
        pictures.append((label, Image.open(result.final_path).convert("RGB")))
    labelled_row(pictures, DOCS / "palettes.png", scale=3)


def upscale(work: Path) -> None:
    """docs/upscale.png: a 64 px shapes picture, enlarged 4× by Lanczos and by `vqclip upscale` (30
    steps at lr 0.02, the setting that kept the judge's reading 7 times in 8)."""
    from PIL import Image

    import vqclip

    small = vqclip.generate(TILE_PROMPT, preset="shapes", seed=1, quiet=True, run_dir=str(work / "small"))
    picture = Image.open(small.final_path).convert("RGB")
    refined = vqclip.upscale(str(small.final_path), scale=4, preset="shapes", seed=1, lr=0.02, quiet=True,
                             run_dir=str(work / "upscaled"))
    labelled_row([("64 px", picture.resize((256, 256), Image.Resampling.NEAREST)),
                  ("Lanczos 4x", picture.resize((256, 256), Image.Resampling.LANCZOS)),
                  ("vqclip upscale --scale 4", Image.open(refined.final_path).convert("RGB"))],
                 DOCS / "upscale.png", scale=1)


def flicker(work: Path) -> None:
    """docs/flicker.png: a red circle sliding across white, restyled on the shapes world as
    docs/video.md measures it (seed 0), without and with video.flow: four frames of each, and each
    frame's change from the one before along the motion."""
    from PIL import Image, ImageDraw

    from vqclip import video
    from vqclip.shapes.world import Scene, draw, to_tensor
    from vqclip.video.flow import frame_changes
    from vqclip.video.frames import write_video

    sources = [to_tensor(draw(Scene("circle", "red", "white", 0.5, 0.25 + 0.5 * k / 11, 0.5), size=64))
               for k in range(12)]
    clip = write_video(work / "clip.mp4", sources, 8.0, {"clip": "sliding circle"})
    rows, curves = [], []
    for label, flow in (("restyle", False), ("video.flow=true", True)):
        result = video.restyle(str(clip), "a red circle on a blue background", preset="shapes-zoom", seed=0,
                               quiet=True, cutn=16, init={"weight": 1.0}, output=str(work / f"{flow}.gif"),
                               run_dir=str(work / str(flow)), video={"first_frame_steps": 30, "steps_per_frame": 10,
                                                                     "blend": 0.3, "smoothing": 0.2, "flow": flow})
        frames = [Image.fromarray(frame.mul(255).round().byte().permute(1, 2, 0).numpy()) for frame in result.frames]
        rows.append((label, [frames[k] for k in (0, 4, 8, 11)]))
        curves.append((label, frame_changes(result.frames, [source.float() for source in sources])))
    scale, gap = 2, 6
    width = 4 * (64 * scale + gap) + 130
    sheet = Image.new("RGB", (width, 2 * (64 * scale + gap) + 190), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    for row, (label, pictures) in enumerate(rows):
        y = row * (64 * scale + gap)
        pen.text((4, y + 60), label, fill=(0, 0, 0))
        for column, picture in enumerate(pictures):
            sheet.paste(picture.resize((64 * scale, 64 * scale), Image.Resampling.NEAREST),
                        (130 + column * (64 * scale + gap), y))
    top, left, plot_w, plot_h = 2 * (64 * scale + gap) + 20, 130, width - 150, 140
    highest = max(max(values) for _, values in curves)
    pen.rectangle((left, top, left + plot_w, top + plot_h), outline=(120, 120, 120))
    pen.text((4, top), f"change from the\nframe before,\nalong the motion\n(0 to {highest:.2f})", fill=(0, 0, 0))
    for (label, values), colour in zip(curves, ((200, 40, 40), (30, 90, 200))):
        points = [(left + plot_w * k / (len(values) - 1), top + plot_h * (1 - value / highest))
                  for k, value in enumerate(values)]
        pen.line(points, fill=colour, width=2)
        pen.text((points[-1][0] - 150, points[-1][1] - 14), f"{label}: mean {sum(values) / len(values):.4f}",
                 fill=colour)
    pen.text((left, top + plot_h + 4), "frames 1 to 11", fill=(0, 0, 0))
    sheet.save(DOCS / "flicker.png", optimize=True)


def ui(work: Path) -> None:
    environment = {**os.environ, "VQCLIP_UI_SCREENSHOT": str(DOCS / "ui.png")}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ui_browser.py",
                    "-k", "generate_preview"], cwd=ROOT, env=environment, check=True)
    if not (DOCS / "ui.png").is_file():
        raise SystemExit("the browser test did not write docs/ui.png (is Chromium installed?)")


def digits(work: Path) -> None:
    """docs/digits-grid.png: the `digits` preset's "the digit 0" … "the digit 9" (rows), seeds 0-5."""
    import torch
    import torch.nn.functional as F

    import vqclip
    from vqclip.config import build_config
    from vqclip.digits.evaluate import DIGITS, PROMPT
    from vqclip.loading import load_models
    from vqclip.train.common import save_grid

    models = load_models(build_config("digits", {"quiet": True}))
    rows = []
    for digit in DIGITS:
        images = [vqclip.generate(PROMPT.format(digit), preset="digits", seed=seed, quiet=True, models=models,
                                  run_dir=str(work / f"{digit}-{seed}")).images[:1] for seed in range(6)]
        rows.append(F.interpolate(torch.cat(images), scale_factor=2, mode="nearest"))
    save_grid(DOCS / "digits-grid.png", rows, {"preset": "digits", "rows": "the digit 0 ... 9", "seeds": "0-5"})


PICTURES = {"contact-sheet": contact_sheet, "morph": morph, "masks": masks, "ui": ui, "digits": digits, "tiles": tiles,
            "palettes": palettes, "upscale": upscale, "flicker": flicker}


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(PICTURES))
    if unknown:
        print(f"unknown picture {', '.join(unknown)}; choose from {', '.join(PICTURES)}", file=sys.stderr)
        return 2
    for name in names or PICTURES:
        print(f"{name} ...", flush=True)
        with tempfile.TemporaryDirectory() as work:
            PICTURES[name](Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
