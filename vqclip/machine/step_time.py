"""How long a step takes on this CPU, so that `size=auto` picks a size a person would wait for.

On a CPU the memory is rarely the limit (a 24 GB machine fits a 2048 px step that runs for
minutes), the time is. A step's time grows with the pixels through the decoder and the cutouts'
resampling, and has a part that does not: CLIP on `cutn` cutouts of its own input size. So the
time is a + b·pixels, fitted through steps timed at two small sizes (the fastest of a few, which
ignores a moment of other work).

The size a run picks must not depend on what else the machine does at that moment (the same
command would give other pixels), so a workload's fitted line is kept per machine in the cache
folder (step-times.json, keyed by the CPU, the torch version, the thread count and every setting
that changes a step's work): it is measured once, and every later run chooses from it. Delete
the file to measure again.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROBE_GRIDS = (8, 16)  # latent positions a side of the two timed probe sizes
REPEATS = 3  # timed steps per probe size, after one untimed: the fastest counts
MAX_SCALE = 4  # size=auto never goes beyond the VQGAN's trained size × this, a side
CACHE_NAME = "step-times.json"


@dataclass(frozen=True)
class StepTime:
    """Seconds per step = fixed + per_pixel · pixels."""

    fixed: float
    per_pixel: float

    def predict(self, width: int, height: int) -> float:
        return self.fixed + self.per_pixel * width * height


def fastest(step: Callable[[], None], repeats: int = REPEATS) -> float:
    """The fastest of `repeats` timed calls, after one untimed (first calls allocate and warm caches)."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def line_through(first: tuple[float, float], second: tuple[float, float]) -> StepTime:
    """The line through two (pixels, seconds) points, never falling and never below 0 at 0 pixels."""
    (x0, y0), (x1, y1) = first, second
    per_pixel = max(0.0, (y1 - y0) / (x1 - x0))
    return StepTime(fixed=max(0.0, y1 - per_pixel * x1), per_pixel=per_pixel)


def fit_step_time(time_at: Callable[[int], float], factor: int,
                  choose: Callable[[StepTime], int] | None = None) -> StepTime:
    """The line through `time_at(side)` (seconds per step at a square side) at the two probe sizes.

    With `choose` (model → the side it would pick), a side beyond the probes is timed too and the
    line drawn through it and the larger probe: a step is slower per pixel once its tensors
    outgrow the caches, so a line through small probes alone predicts a large step too fast
    (docs/experiments.md#2026-12-06--same-pixels-under-load). Timing the chosen size costs a few of
    the run's own steps.
    """
    probes = [((grid * factor) ** 2, time_at(grid * factor)) for grid in PROBE_GRIDS]
    model = line_through(*probes)
    side = choose(model) if choose is not None else 0
    if side * side > probes[-1][0]:
        model = line_through(probes[-1], (side * side, time_at(side)))
    return model


def largest_side_in_time(model: StepTime, factor: int, steps: int, budget_s: float, max_side: int,
                         min_side: int) -> int:
    """The largest square side (a multiple of factor, min_side to max_side) whose `steps` steps are
    predicted to fit `budget_s` seconds; min_side when none does."""
    fitting = [side for side in range(min_side, max_side + 1, factor) if steps * model.predict(side, side) <= budget_s]
    return max(fitting, default=min_side)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            return next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), name)
    except OSError:
        return name


def machine() -> str:
    """This machine as far as a step's speed goes: the CPU and the torch version."""
    import torch

    return f"{cpu_name()} | torch {torch.__version__}"


def cached_step_time(key: str, measure: Callable[[], StepTime], folder: Path) -> tuple[StepTime, bool]:
    """The StepTime stored under `key` in folder/step-times.json, or `measure()` stored there first.
    Returns it and whether it was measured now."""
    from ..atomic import atomic_write_text

    path = folder / CACHE_NAME
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    if isinstance(stored.get(key), dict) and {"fixed", "per_pixel"} <= set(stored[key]):
        return StepTime(float(stored[key]["fixed"]), float(stored[key]["per_pixel"])), False
    model = measure()
    stored[key] = {"fixed": model.fixed, "per_pixel": model.per_pixel}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(stored, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only cache: measured again next time, still a good choice
    return model, True
