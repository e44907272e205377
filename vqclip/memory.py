"""How much memory a step takes, and `size=auto`: the largest image (and cutn) that fits.

Users' most common failure is running out of memory at a larger size. A step's peak memory is,
to a very good approximation, a fixed part (the cutouts and CLIP's activations, set by cutn) plus
a part proportional to the image's pixels (the decoder's activations). So two small probe steps
measure both parts, and the fit predicts any size without trying it.

Peaks are measured, not guessed: `torch.cuda.max_memory_allocated` on CUDA; on other devices
the bytes of live tensors, counted by a dispatch mode that sees every tensor the step creates and
frees (deterministic, unlike the process's resident set).
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .errors import UserError

MAX_AUTO_SIDE = 4096  # size=auto never goes beyond this, whatever the memory
SAFETY = 0.85  # the share of the budget a predicted peak may use: the fit is not exact


class LiveTensorMemory(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside it while they live; keeps the peak."""

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], int] = {}
        self.current = self.peak = 0

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                storage = value.untyped_storage()
                key = (storage.data_ptr(), storage.nbytes())
                if storage.nbytes() and key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)  # storages keep their Python object
        return out


def measure_peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """The most memory `step()` holds at once, beyond what existed before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with LiveTensorMemory() as counter:
        step()
    return counter.peak


def free_memory_bytes(device: torch.device) -> int:
    """Memory available to a new allocation now: free GPU memory, or the OS's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class MemoryModel:
    """peak bytes ≈ fixed + per_pixel · width · height, for one cutn."""

    fixed: float
    per_pixel: float

    def predict(self, width: int, height: int) -> float:
        return self.fixed + self.per_pixel * width * height


def fit_memory_model(measure: Callable[[int], int], factor: int) -> MemoryModel:
    """Measure square steps of 4 and 8 latent positions a side; a line through the two peaks."""
    small, large = 4 * factor, 8 * factor
    peak_small, peak_large = measure(small), measure(large)
    per_pixel = max(0.0, (peak_large - peak_small) / (large**2 - small**2))
    return MemoryModel(fixed=max(0.0, peak_small - per_pixel * small**2), per_pixel=per_pixel)


def largest_side(model: MemoryModel, factor: int, budget: float, max_side: int = MAX_AUTO_SIDE) -> int | None:
    """The largest square side (a multiple of factor) whose predicted peak fits SAFETY · budget."""
    best = None
    for side in range(factor, max_side + 1, factor):
        if model.predict(side, side) > SAFETY * budget:
            break
        best = side
    return best


def auto_size(measure: Callable[[int, int], int], factor: int, budget: float, cutn: int,
              min_side: int | None = None) -> tuple[int, int]:
    """(side, cutn) for `size=auto`: the largest square that fits `budget` bytes with the asked
    cutn; when not even `min_side` (default 4 latent positions) fits, cutn is halved until it does.

    `measure(side, cutn)` is the peak of one step at that size and cutn (`measure_peak_bytes`).
    """
    min_side = min_side or 4 * factor
    while True:
        model = fit_memory_model(lambda side, cutn=cutn: measure(side, cutn), factor)
        side = largest_side(model, factor, budget)
        if side is not None and side >= min_side:
            return side, cutn
        if cutn == 1:
            raise UserError(f"size=auto: not even {min_side}×{min_side} with cutn 1 fits in "
                            f"{budget / 2**20:.0f} MB: free memory, or use a smaller model")
        cutn = max(1, cutn // 2)
