"""`vqclip bench --time-to-image`: seconds until a run's image is as good as the classic loop's.

How users feel speed is the wait for a good image, and fewer steps beat faster steps. For each
prompt, the classic loop (random codes, no pull toward the start, the classic scripts' 500 steps)
sets the target: the CLIP score of its final image. Then each start runs with the same steps at
most, its image scored after every step (the whole image, no cutouts, as runs rank their
candidates), and the clock stops when the score first reaches the target:

- random: the classic loop itself (it reaches its own final score at or before its last step);
- prior: the preset's start (the `shapes` preset: the prior's best of 8 samples, held near by
  init.weight), sampling time included.

Models are loaded once before any clock starts; scoring time is left out of the clock.
"""

from __future__ import annotations

import statistics
import time

from ..errors import UserError

CLASSIC_START = {"init": {"mode": "random", "weight": 0.0}}  # random codes, nothing pulls toward them


def score_trace(config, models, scorer, target: float | None = None):
    """(seconds since the run started, CLIP score) after each step, and the final image; stops early
    at `target`."""
    from ..generation import run

    trace: list[tuple[float, float]] = []
    scoring = 0.0
    started = time.perf_counter()

    def after_step(step) -> bool | None:
        nonlocal scoring
        elapsed = time.perf_counter() - started - scoring  # the run's own time so far
        begin = time.perf_counter()
        score = scorer.scores(step.image[:1], step=step.step - 1)[0]
        scoring += time.perf_counter() - begin
        trace.append((elapsed, score))
        return False if target is not None and score >= target else None

    result = run(config, models=models, callback=after_step)
    return trace, result.images[0]


def drawn_right(image, prompt: str) -> bool | None:
    """On the shapes world, whether the pixel judge finds the prompt's colour, shape and background
    (a CLIP score can be high for a texture); None for prompts the world does not parse."""
    from ..shapes import judge, world

    asked = world.parse_caption(prompt)
    if not asked or image.shape[-1] != image.shape[-2]:
        return None
    verdicts = judge.score_against(judge.judge(image), asked)
    return None if None in verdicts.values() else all(verdicts.values())


def first_reaching(trace: list[tuple[float, float]], target: float) -> float | None:
    """The seconds at which the trace first reaches `target`, or None."""
    return next((seconds for seconds, score in trace if score >= target), None)


def time_to_image(prompts: list[str], *, preset: str = "shapes", steps: int = 500, seed: int = 1,
                  progress=None) -> dict:
    """Per prompt: the classic target, and the seconds each start needs to reach it."""
    import tempfile

    from ..config import build_config
    from ..generation import build_timeline
    from ..loading import load_models
    from ..objective import Objective

    if steps < 1 or not prompts:
        raise UserError("--time-to-image needs at least one prompt and one step")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        def config(prompt: str, start: dict, name: str):
            return build_config(preset, {**start, "prompts": [prompt], "seed": seed, "steps": steps, "quiet": True,
                                         "run_dir": f"{scratch}/{name}", "save_every": 0, "checkpoint_every": 0})

        models = load_models(config(prompts[0], {}, "load"))
        for index, prompt in enumerate(prompts):
            classic = config(prompt, CLASSIC_START, f"{index}-classic")
            scorer = Objective(models.clip, build_timeline(classic), cutn=1, cut_pow=1.0, cut_mode="classic",
                               noise_fac=0.0)
            random_trace, random_image = score_trace(classic, models, scorer)
            target = random_trace[-1][1]
            prior_trace, prior_image = score_trace(config(prompt, {}, f"{index}-preset"), models, scorer, target)
            rows.append({"prompt": prompt, "target_score": round(target, 4),
                         "classic_s": round(random_trace[-1][0], 2),
                         "random_s": _rounded(first_reaching(random_trace, target)),
                         "preset_s": _rounded(first_reaching(prior_trace, target)),
                         "preset_steps": len(prior_trace), "preset_best": round(max(s for _, s in prior_trace), 4),
                         "classic_drawn_right": drawn_right(random_image, prompt),
                         "preset_drawn_right": drawn_right(prior_image, prompt)})
            if progress:
                progress(format_row(rows[-1]))
    reached = [row["preset_s"] for row in rows if row["preset_s"] is not None]
    return {"preset": preset, "steps": steps, "seed": seed, "rows": rows,
            "median_random_s": statistics.median(row["random_s"] for row in rows),
            "median_preset_s": statistics.median(reached) if reached else None,
            "preset_reached": len(reached),
            "classic_drawn_right": sum(bool(row["classic_drawn_right"]) for row in rows),
            "preset_drawn_right": sum(bool(row["preset_drawn_right"]) for row in rows)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def format_row(row: dict) -> str:
    preset = f"{row['preset_s']:.1f} s ({row['preset_steps']} steps)" if row["preset_s"] is not None else \
        f"not reached in {row['preset_steps']} steps (best {row['preset_best']:.3f})"
    return (f"{row['prompt'][:44]:44s} target {row['target_score']:.3f}: random start {row['random_s']:.1f} s "
            f"(classic run {row['classic_s']:.1f} s), preset start {preset}")


def format_time_to_image(report: dict) -> str:
    lines = [format_row(row) for row in report["rows"]]
    preset = "never" if report["median_preset_s"] is None else f"{report['median_preset_s']:.1f} s"
    count = len(report["rows"])
    lines.append(f"median seconds to the classic loop's {report['steps']}-step score: random start "
                 f"{report['median_random_s']:.1f} s, {report['preset']} preset's start {preset} "
                 f"({report['preset_reached']} of {count} prompts reached)")
    lines.append(f"drawn right (pixel judge): classic loop {report['classic_drawn_right']} of {count}, "
                 f"preset's start {report['preset_drawn_right']} of {count}")
    return "\n".join(lines)
