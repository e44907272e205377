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
    from ..generate import load_models, run

    def config(prompt: str, seed: int, run_dir: Path):
        return build_config(preset, {"prompts": [prompt], "seed": seed, "quiet": True, "run_dir": str(run_dir)},
                            list(dotlist))

    models = load_models(config("x", 0, out))  # checks the settings before any work, loads once
    rows, started = [], time.perf_counter()
    for index, prompt in enumerate(prompts):
        asked = world.parse_caption(prompt)
        for seed in range(seeds):
            result = run(config(prompt, seed, out / f"{index:03d}-seed{seed}"), models=models)
            verdict = judge.judge(result.images[0])
            scores = judge.score_against(verdict, asked)
            rows.append({"prompt": prompt, "seed": seed, "colour": verdict.colour, "shape": verdict.shape,
                         "background": verdict.background, **{f"{k}_ok": v for k, v in scores.items()},
                         "image": str(result.final_path)})
    seconds = (time.perf_counter() - started) / max(len(rows), 1)
    summary = {key: _rate(rows, f"{key}_ok") for key in ("colour", "shape", "background")}
    return {"summary": {**summary, "images": len(rows), "seconds_per_image": round(seconds, 2)}, "rows": rows}


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
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
