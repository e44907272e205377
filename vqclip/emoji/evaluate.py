"""`vqclip emoji eval`: draw held-out (emoji, background) pairs, compositions no model trained on,
and read each image back with the judge (vqclip/emoji/judge.py, none of the project's models).

Figures: generation (a full run of the preset per pair and seed): the emoji ranked first and in the
first five among all the font's emoji, and the background; the prior alone (with
`prior_samples`): all its samples and the best by CLIP; the CLIP's zero-shot top-1 over every
emoji's prompt on the pairs' real renders; and two ceilings: the judge's own on those renders made
soft, and the judge on the renders as the preset's VQGAN reconstructs them (what any run through
that VQGAN can show at best).
"""

from __future__ import annotations

import random
from pathlib import Path

from ..grading import grading, rate, summary_seconds, timed
from . import data
from .judge import Verdict, ceiling, shared_judge

PARTS = ("judging", "clip_zero_shot", "reconstruction", "prior")  # the timed parts besides loading and generation


def held_out_pairs(count: int, seed: int = 0) -> list[tuple[data.Emoji, str]]:
    """The first `count` held-out pairs in a fixed shuffled order (so a few cover many emoji)."""
    judge = shared_judge()
    pairs = [(emoji, background) for emoji in judge.emoji for background in data.PALETTE
             if data.held_out(emoji, background)]
    random.Random(seed).shuffle(pairs)
    return pairs[:count]


def scored(verdict: Verdict, emoji: data.Emoji, background: str) -> dict:
    rank = shared_judge().rank_of(verdict, emoji)
    guess = shared_judge().emoji[verdict.ranking[0]].name if verdict.ranking else None
    return {"judged": guess, "rank": rank, "top1": rank == 0, "top5": rank is not None and rank < 5,
            "background_ok": verdict.background == background}


def evaluate(pairs: int, seeds: int, *, preset: str = "emoji", out: Path, dotlist: list[str] = (),
             prior_samples: int = 0) -> dict:
    """Generate `pairs` held-out pairs with seeds 0..seeds-1 and judge them. Returns {"summary", "rows",
    "clip", "ceiling"} and, with `prior_samples`, "prior"."""
    judge = shared_judge()
    chosen = held_out_pairs(pairs)
    with grading(preset, out, dotlist, first=data.find_font, parts=PARTS) as runs:
        rows = []
        for index, (emoji, background) in enumerate(chosen):
            prompt = data.caption(emoji, background)
            for seed in range(seeds):
                result = runs.run(prompt, seed, f"{index:04d}-seed{seed}")
                with timed(runs.seconds, "judging"):
                    rows.append({"prompt": prompt, "emoji": emoji.name, "seed": seed, **scored(judge(result.images[0]), emoji, background),
                                 "clip_score": round(result.scores[0], 4), "image": str(result.final_path)})
        with timed(runs.seconds, "clip_zero_shot"):
            clip = clip_zero_shot(runs.models.clip, chosen)
        with timed(runs.seconds, "reconstruction"):
            reconstruction = vqgan_ceiling(runs.models.vqgan, chosen)
        prior = None
        if prior_samples:
            with timed(runs.seconds, "prior"):
                prior = prior_figures(runs.models, chosen, prior_samples)
    report = {"summary": {**{key: rate([row[key] for row in rows]) for key in ("top1", "top5", "background_ok")},
                          "images": len(rows), "pairs": len(chosen), "emoji": len({row["emoji"] for row in rows}),
                          **summary_seconds(runs.seconds, len(rows))},
              "rows": rows, "clip": clip, "ceiling": ceiling(judge, chosen, blur=1.5, scale=0.5),
              "reconstruction": reconstruction}
    if prior is not None:
        report["prior"] = prior
    return report


def prior_figures(models, pairs: list[tuple[data.Emoji, str]], samples: int, seed: int = 0) -> dict:
    """The prior alone: how many of its samples show the emoji asked for (top-1), and how often the
    best of them by CLIP (the start of a run) does."""
    from ..errors import UserError
    from ..prior.sample import sample_images, settings_for

    if models.prior is None:
        raise UserError("--prior-samples needs a preset that starts from a prior (init.mode=prior)")
    every, best = [], []
    for emoji, background in pairs:
        result = sample_images(models.prior, models.vqgan, data.caption(emoji, background),
                               settings_for(models.prior, count=samples, seed=seed), clip=models.clip)
        judged = [scored(shared_judge()(image), emoji, background)["top1"] for image in result.images]
        every += judged
        best.append(judged[0])  # ranked best first
    return {"samples_top1": rate(every), "best_of_n_top1": rate(best), "samples_per_prompt": samples}


def renders(pairs: list[tuple[data.Emoji, str]], seed: int = 0):
    """Real renders of `pairs` as the data draws them: an N × 3 × H × W tensor in [0, 1]."""
    import numpy as np
    import torch

    font, rng = data.find_font(), random.Random(seed)
    return torch.stack([torch.from_numpy(np.asarray(data.compose(data.draw(chr(emoji.code_point), font),
                                                                 background, rng), dtype=np.float32) / 255)
                        .permute(2, 0, 1) for emoji, background in pairs])


def vqgan_ceiling(vqgan, pairs: list[tuple[data.Emoji, str]], batch: int = 32) -> dict:
    """The judge on the renders of `pairs` encoded and decoded by `vqgan` (nearest codes), with the
    reconstructions' PSNR: what the VQGAN keeps of each emoji."""
    import math

    import torch

    pictures, device = renders(pairs), next(vqgan.parameters()).device
    with torch.no_grad():
        rebuilt = torch.cat([vqgan.decode(vqgan.quantize(vqgan.encode(part.to(device)))).float().cpu()
                             for part in pictures.split(batch)])
    verdicts = [scored(shared_judge()(image), emoji, background) for image, (emoji, background) in zip(rebuilt, pairs)]
    mse = float(((rebuilt - pictures) ** 2).mean())
    return {**{key: rate([v[key] for v in verdicts]) for key in ("top1", "top5", "background_ok")},
            "psnr_db": round(10 * math.log10(1 / max(mse, 1e-10)), 2), "images": len(pairs)}


def clip_zero_shot(clip, pairs: list[tuple[data.Emoji, str]], seed: int = 0) -> dict:
    """How often the CLIP picks the right emoji's prompt among every emoji's (on the right background)
    for a real render of each pair."""
    from ..models.clip import clip_score_table

    judge = shared_judge()
    right = 0
    for background in data.PALETTE:  # every emoji's prompt on one background, embedded once for its pairs
        group = [emoji for emoji, on in pairs if on == background]
        if not group:
            continue
        pixels = renders([(emoji, background) for emoji in group], seed)
        scores = clip_score_table(clip, pixels, [data.caption(other, background) for other in judge.emoji])
        right += sum(judge.emoji[int(best)] == emoji for best, emoji in zip(scores.argmax(1), group))
    return {"zero_shot_top1": rate([True] * right + [False] * (len(pairs) - right)), "images": len(pairs),
            "choices": len(judge.emoji)}


def format_table(report: dict) -> str:
    s, c, ceiling_figures, r = report["summary"], report["clip"], report["ceiling"], report["reconstruction"]
    lines = [f"generation: the emoji first {100 * s['top1']:.1f}%, in the first five {100 * s['top5']:.1f}%, the "
             f"background {100 * s['background_ok']:.1f}% ({s['images']} images of {s['pairs']} held-out pairs, "
             f"{s['emoji']} emoji, "
             f"{s['seconds_per_image']} s each)",
             f"CLIP zero-shot top-1 over {c['choices']} emoji on {c['images']} real renders: "
             f"{100 * c['zero_shot_top1']:.1f}%",
             f"the judge's ceiling (real renders blurred 1.5 px, half size): top-1 {100 * ceiling_figures['top1']:.1f}%",
             f"the judge on the VQGAN's reconstructions of the renders ({r['psnr_db']} dB): top-1 "
             f"{100 * r['top1']:.1f}%, top-5 {100 * r['top5']:.1f}%, background {100 * r['background_ok']:.1f}%"]
    if "prior" in report:
        p = report["prior"]
        lines.append(f"prior alone: {100 * p['samples_top1']:.1f}% of its samples show the emoji, the best of "
                     f"{p['samples_per_prompt']} by CLIP {100 * p['best_of_n_top1']:.1f}%")
    return "\n".join(lines)
