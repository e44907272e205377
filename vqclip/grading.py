"""What the worlds' `eval` commands share: a preset's models loaded once for a whole grading, one
run per prompt and seed, and where the time went.

Each world brings its own prompts and judge (vqclip/digits/evaluate.py, vqclip/emoji/evaluate.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path


@contextlib.contextmanager
def timed(seconds: dict, part: str):
    """Adds the seconds spent inside the `with` to seconds[part]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started


def run_config(preset: str, dotlist: list[str], prompt: str, seed: int, run_dir: Path):
    """One graded run's config: the preset, the prompt and seed, quiet, in its own folder."""
    from .config import build_config

    return build_config(preset, {"prompts": [prompt], "seed": seed, "quiet": True, "run_dir": str(run_dir)},
                        list(dotlist))


class Grading:
    """A preset's runs for one grading: `run(prompt, seed, folder)` generates with the models loaded
    once, into OUT/folder; `seconds` collects the time of each part."""

    def __init__(self, preset: str, out: Path, dotlist: list[str], models, seconds: dict):
        self.preset, self.out, self.dotlist, self.models, self.seconds = preset, out, list(dotlist), models, seconds

    def run(self, prompt: str, seed: int, folder: str):
        from .generation import run

        with timed(self.seconds, "generation"):
            return run(run_config(self.preset, self.dotlist, prompt, seed, self.out / folder), models=self.models)


@contextlib.contextmanager
def grading(preset: str, out: Path, dotlist: list[str] = (), *, first: Callable[[], object] = lambda: None,
            parts: tuple[str, ...] = ()):
    """A Grading over the preset's models, under one thread plan (and at most one warning about busy
    cores) for the whole command. `first` runs before anything loads (a judge that may be missing);
    `parts` name the command's own timed parts, reported even when they took no time."""
    from .loading import load_models
    from .machine.threads import run_threads

    seconds = dict.fromkeys(("loading", "generation", *parts), 0.0)
    started = time.perf_counter()
    with timed(seconds, "loading"):
        first()
        config = run_config(preset, dotlist, "x", 0, out)  # the settings, checked before anything loads
    with run_threads(config.threads):
        with timed(seconds, "loading"):
            models = load_models(config)
        yield Grading(preset, out, dotlist, models, seconds)
    seconds["total"] = time.perf_counter() - started


def rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summary_seconds(seconds: dict, images: int) -> dict:
    """The time of each part, and the generation's per image."""
    return {"seconds_per_image": round(seconds["generation"] / max(images, 1), 2),
            "seconds": {"total": round(seconds.get("total", 0.0), 2),
                        **{part: round(value, 2) for part, value in seconds.items() if part != "total"}}}
