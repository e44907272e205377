"""`vqclip digits eval`: draw "the digit 0" … "the digit 9" and read each image back with the judge.

Three figures, each judged by `vqclip.digits.judge` (a classifier of real held-out handwriting):
- generation: a full run of the preset per digit and seed;
- the prior alone: `prior_samples` samples per digit, all of them and the best by CLIP (the start a
  run of the preset takes);
- the CLIP's zero-shot accuracy on the 359 real held-out digits, choosing among the ten prompts.
"""

from __future__ import annotations

from pathlib import Path

from ..grading import grading, rate, summary_seconds, timed
from . import judge

PROMPT = "the digit {}"
DIGITS = tuple(range(10))


PARTS = ("judging", "clip_zero_shot", "prior")  # the timed parts besides loading and generation


def prompts() -> list[str]:
    return [PROMPT.format(digit) for digit in DIGITS]


def evaluate(seeds: int, *, preset: str = "digits", out: Path, dotlist: list[str] = (),
             prior_samples: int = 0, digits: tuple[int, ...] = DIGITS) -> dict:
    """Generate each of `digits` with seeds 0..seeds-1 and judge the images; with `prior_samples`,
    the prior's samples too. Returns {"summary": ..., "rows": one per image, "prior": ..., "clip": ...};
    the summary's "seconds" say where the time went ("total" and its parts)."""
    # the classifier first: without scikit-learn, the one-line error before any image is drawn
    with grading(preset, out, dotlist, first=judge.classifier, parts=PARTS) as runs:
        rows = []
        for digit in digits:
            for seed in range(seeds):
                result = runs.run(PROMPT.format(digit), seed, f"digit{digit}-seed{seed}")
                with timed(runs.seconds, "judging"):
                    drawn = judge.judge(result.images[:1])[0]
                rows.append({"digit": digit, "seed": seed, "judged": drawn, "ok": drawn == digit,
                             "clip_score": round(result.scores[0], 4), "image": str(result.final_path)})
        with timed(runs.seconds, "clip_zero_shot"):
            clip = clip_zero_shot(runs.models.clip)
        prior = None
        if prior_samples:
            with timed(runs.seconds, "prior"):
                prior = prior_figures(runs.models, prior_samples, digits)
    report = {"summary": {"accuracy": rate([row["ok"] for row in rows]), "per_digit": _per_digit(rows, digits),
                          "images": len(rows), **summary_seconds(runs.seconds, len(rows))},
              "rows": rows, "clip": clip}
    if prior is not None:
        report["prior"] = prior
    return report


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
    return {"samples_accuracy": rate(every), "best_of_n_accuracy": rate(best), "samples_per_digit": samples}


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
    return {"zero_shot_accuracy": rate((scores.argmax(1) == truth).tolist()), "images": int(mask.sum())}


def _per_digit(rows: list[dict], digits: tuple[int, ...]) -> dict:
    return {str(d): rate([row["ok"] for row in rows if row["digit"] == d]) for d in digits}


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
                     f"judging {t.get('judging', 0):.1f} s, CLIP zero-shot {t.get('clip_zero_shot', 0):.1f} s"
                     + (f", prior alone {t.get('prior', 0):.1f} s" if "prior" in report else ""))
    return "\n".join(lines)
