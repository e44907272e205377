"""`vqclip shapes eval`: generate prompts of the shapes world and grade the images by their pixels.

The default prompt set covers every colour × shape once, each on a different background, so a
table of 24 rows says how often plain CLIP guidance draws what it is asked for.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError
from . import judge, world


def default_prompts() -> list[str]:
    """8 colours × 3 shapes, backgrounds varied deterministically (never the shape's colour)."""
    prompts = []
    for i, colour in enumerate(world.COLOURS):
        for j, shape in enumerate(world.SHAPES):
            others = [c for c in world.COLOURS if c != colour]
            background = others[(i + 3 * j) % len(others)]
            prompts.append(world.render("a {colour} {shape} on a {background} background",
                                        world.Scene(shape, colour, background, 0.5, 0.5, 0.5)))
    return prompts


def read_prompts(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the prompt file {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not prompts:
        raise UserError(f"{path} holds no prompts (one per line)")
    return prompts


def evaluate(prompts: list[str], seeds: int, *, preset: str = "shapes", out: Path,
             dotlist: list[str] = ()) -> dict:
    """Generate every prompt with seeds 0..seeds-1, judge each image; a summary and one row each.

    `dotlist` holds `key=value` settings applied to every run (e.g. steps=50, init.mode=random).
    """
    from ..config import build_config
    from ..generation import run
    from ..loading import load_models

    def config(prompt: str, seed: int, run_dir: Path):
        return build_config(preset, {"prompts": [prompt], "seed": seed, "quiet": True, "run_dir": str(run_dir)},
                            list(dotlist))

    models = load_models(config("x", 0, out))  # checks the settings before any work, loads once
    rows, seconds = [], 0.0
    for index, prompt in enumerate(prompts):
        asked = world.parse_caption(prompt)
        reference = drawing_score(models, config(prompt, 0, out), asked)
        for seed in range(seeds):
            started = time.perf_counter()
            result = run(config(prompt, seed, out / f"{index:03d}-seed{seed}"), models=models)
            seconds += time.perf_counter() - started
            verdict = judge.judge(result.images[0])
            scores = judge.score_against(verdict, asked)
            rows.append({"prompt": prompt, "seed": seed, "colour": verdict.colour, "shape": verdict.shape,
                         "background": verdict.background, **{f"{k}_ok": v for k, v in scores.items()},
                         "clip_score": round(result.scores[0], 4), "drawing_score": reference,
                         "image": str(result.final_path)})
    summary = {key: _rate(rows, f"{key}_ok") for key in ("colour", "shape", "background")}
    below, references = _below_drawing(rows)
    summary["below_drawing"] = round(below / references, 4) if references else None
    return {"summary": {**summary, "images": len(rows), "seconds_per_image": round(seconds / max(len(rows), 1), 2)},
            "rows": rows}


def drawing_score(models, config, asked: dict) -> float | None:
    """The CLIP score a run reports (whole image, no cutouts), given to a drawing of the caption
    seen through the run's VQGAN; None where the caption or the VQGAN leaves no drawing to make.

    It tells two failures apart. An image that scores below it is one the CLIP itself ranks under
    a drawing of its caption: the optimisation stopped short of a better image (a local optimum).
    An image that scores above it and is still judged wrong has fooled the CLIP.
    """
    import torch

    from ..generation import build_timeline
    from ..objective import Objective

    scene = world.scene_for(asked)
    square = config.size != "auto" and config.size[0] == config.size[1]  # the world draws squares
    if scene is None or not square or models.vqgan.encoder is None:
        return None
    picture = world.to_tensor(world.draw(scene, size=int(config.size[0])))[None].to(models.device)
    with torch.no_grad():
        seen = models.vqgan.decode(models.vqgan.quantize(models.vqgan.encode(picture)))
    scorer = Objective(models.clip, build_timeline(config), cutn=1, cut_pow=1.0, cut_mode="classic", noise_fac=0.0)
    return round(scorer.scores(seen, step=0)[0], 4)


def _below_drawing(rows: list[dict]) -> tuple[int, int]:
    """How many images score below the drawing of their caption, of how many have one."""
    references = [row for row in rows if row["drawing_score"] is not None]
    return sum(row["clip_score"] < row["drawing_score"] for row in references), len(references)


def _rate(rows: list[dict], key: str) -> float | None:
    graded = [row[key] for row in rows if row[key] is not None]
    return round(sum(graded) / len(graded), 4) if graded else None


def format_table(report: dict) -> str:
    lines = [f"{'prompt':44s} {'seed':>4s}  {'colour':8s} {'shape':9s} {'background':10s}"]
    for row in report["rows"]:
        marks = {k: "" if row[f"{k}_ok"] is None else (" ok" if row[f"{k}_ok"] else " x")
                 for k in ("colour", "shape", "background")}
        lines.append(f"{row['prompt'][:44]:44s} {row['seed']:4d}  {str(row['colour']) + marks['colour']:8s} "
                     f"{str(row['shape']) + marks['shape']:9s} {str(row['background']) + marks['background']:10s}")
    s = report["summary"]
    lines.append(f"colour {_pct(s['colour'])}  shape {_pct(s['shape'])}  background {_pct(s['background'])}  "
                 f"({s['images']} images, {s['seconds_per_image']} s each)")
    below, references = _below_drawing(report["rows"])
    if references:
        lines.append(f"the CLIP scores {below} of {references} images below a drawing of their caption: "
                     "there the optimisation stopped short of an image the CLIP prefers")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
