"""`vqclip digits eval`: draw "the digit 0" … "the digit 9" and read each image back with the judge.

Three figures, each judged by `vqclip.digits.judge` (a classifier of real held-out handwriting):
- generation: a full run of the preset per digit and seed;
- the prior alone: `prior_samples` samples per digit, all of them and the best by CLIP (the start a
  run of the preset takes);
- the CLIP's zero-shot accuracy on the 359 real held-out digits, choosing among the ten prompts.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from . import judge

PROMPT = "the digit {}"
DIGITS = tuple(range(10))


def prompts() -> list[str]:
    return [PROMPT.format(digit) for digit in DIGITS]


def evaluate(seeds: int, *, preset: str = "digits", out: Path, dotlist: list[str] = (),
             prior_samples: int = 0, digits: tuple[int, ...] = DIGITS) -> dict:
    """Generate each of `digits` with seeds 0..seeds-1 and judge the images; with `prior_samples`,
    the prior's samples too. Returns {"summary": ..., "rows": one per image, "prior": ..., "clip": ...};
    the summary's "seconds" say where the time went ("total" and its parts)."""
    from ..config import build_config
    from ..generation import run
    from ..loading import load_models
    from ..machine.threads import run_threads

    def config(prompt: str, seed: int, run_dir: Path):
        return build_config(preset, {"prompts": [prompt], "seed": seed, "quiet": True, "run_dir": str(run_dir)},
                            list(dotlist))

    started = time.perf_counter()
    seconds = dict.fromkeys(("loading", "generation", "judging", "clip_zero_shot", "prior"), 0.0)
    with _timed(seconds, "loading"):
        judge.classifier()  # without scikit-learn: the one-line error before any image is drawn
        first = config("x", 0, out)  # checks the settings before any work
    # one thread plan (and at most one "threads busy" warning) for the whole command: each run inside keeps it
    with run_threads(first.threads):
        with _timed(seconds, "loading"):
            models = load_models(first)  # loaded once
        rows = []
        for digit in digits:
            for seed in range(seeds):
                with _timed(seconds, "generation"):
                    result = run(config(PROMPT.format(digit), seed, out / f"digit{digit}-seed{seed}"), models=models)
                with _timed(seconds, "judging"):
                    drawn = judge.judge(result.images[:1])[0]
                rows.append({"digit": digit, "seed": seed, "judged": drawn, "ok": drawn == digit,
                             "clip_score": round(result.scores[0], 4), "image": str(result.final_path)})
        with _timed(seconds, "clip_zero_shot"):
            clip = clip_zero_shot(models.clip)
        prior = None
        if prior_samples:
            with _timed(seconds, "prior"):
                prior = prior_figures(models, prior_samples, digits)
    seconds = {"total": time.perf_counter() - started, **seconds}
    report = {"summary": {"accuracy": _rate([row["ok"] for row in rows]), "per_digit": _per_digit(rows, digits),
                          "images": len(rows), "seconds_per_image": round(seconds["generation"] / max(len(rows), 1), 2),
                          "seconds": {part: round(value, 2) for part, value in seconds.items()}},
              "rows": rows, "clip": clip}
    if prior is not None:
        report["prior"] = prior
    return report


@contextlib.contextmanager
def _timed(seconds: dict, part: str):
    """Adds the seconds spent inside the `with` to seconds[part]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] += time.perf_counter() - started


def prior_figures(models, samples: int, digits: tuple[int, ...] = DIGITS, seed: int = 0) -> dict:
    """The prior alone: how many of its samples show the digit asked for, and how often the best of
    them by CLIP (the start of a run) does."""
    from ..errors import UserError
    from ..prior.sample import sample_images, settings_for

    if models.prior is None:
        raise UserError("--prior-samples needs a preset that starts from a prior (init.mode=prior)")
    every, best = [], []
    for digit in digits:
        result = sample_images(models.prior, models.vqgan, PROMPT.format(digit),
                               settings_for(models.prior, count=samples, seed=seed), clip=models.clip)
        judged = judge.judge(result.images)  # ranked best first
        every += [drawn == digit for drawn in judged]
        best.append(judged[0] == digit)
    return {"samples_accuracy": _rate(every), "best_of_n_accuracy": _rate(best), "samples_per_digit": samples}


def clip_zero_shot(clip) -> dict:
    """How often the CLIP picks "the digit d" of the ten for a real held-out digit."""
    import numpy as np
    import torch

    from ..models.clip import clip_score_table
    from .data import load_digits, picture

    images, digits = load_digits()
    mask = judge.held_out_mask(len(images))
    pixels = torch.stack([torch.from_numpy(np.asarray(picture(p), dtype=np.float32) / 255).permute(2, 0, 1)
                          for p in images[mask]])
    scores = clip_score_table(clip, pixels, prompts())  # each image embedded once, against the ten prompts
    truth = torch.tensor(np.asarray(digits)[mask])
    return {"zero_shot_accuracy": _rate((scores.argmax(1) == truth).tolist()), "images": int(mask.sum())}


def _per_digit(rows: list[dict], digits: tuple[int, ...]) -> dict:
    return {str(d): _rate([row["ok"] for row in rows if row["digit"] == d]) for d in digits}


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def format_table(report: dict) -> str:
    s = report["summary"]
    lines = ["digit  " + " ".join(f"{d:>5s}" for d in s["per_digit"]),
             "right  " + " ".join(f"{100 * rate:4.0f}%" for rate in s["per_digit"].values()),
             f"generation judged right {100 * s['accuracy']:.1f}% ({s['images']} images, "
             f"{s['seconds_per_image']} s each to generate)",
             f"CLIP zero-shot on {report['clip']['images']} held-out digits: "
             f"{100 * report['clip']['zero_shot_accuracy']:.1f}%"]
    if "prior" in report:
        p = report["prior"]
        lines.append(f"prior alone: {100 * p['samples_accuracy']:.1f}% of its samples judged right, the best of "
                     f"{p['samples_per_digit']} by CLIP {100 * p['best_of_n_accuracy']:.1f}%")
    if "seconds" in s:  # reports written before the breakdown have none
        t = s["seconds"]
        lines.append(f"{t['total']:.1f} s after start-up: loading {t['loading']:.1f} s, generation {t['generation']:.1f} s, "
                     f"judging {t['judging']:.1f} s, CLIP zero-shot {t['clip_zero_shot']:.1f} s"
                     + (f", prior alone {t['prior']:.1f} s" if "prior" in report else ""))
    return "\n".join(lines)
