"""What the shapes-world recipes share: the learning-rate shape, resumable checkpoints, bf16.

A recipe's training state (model, optimiser, schedule, step and every random stream) is one
file, written atomically, so a recipe killed at any moment continues with `--resume` and ends
with the same weights as one never stopped.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch

from ..atomic import atomic_open


def warmup_cosine(warmup: int, steps: int):
    """A LambdaLR factor: linear warm-up, then a cosine decay to zero at `steps`."""
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))


def bf16_fast() -> bool:
    """bf16 autocast pays off on CPUs with bf16 matrix instructions (AVX512-BF16, AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def save_checkpoint(path: Path, step: int, model, optimizer, schedule, rng: random.Random,
                    generator: torch.Generator, **extra) -> None:
    version, mt, _ = rng.getstate()
    with atomic_open(path) as f:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "step": step, "torch_rng": torch.get_rng_state(),
                    "generator": generator.get_state(), "rng": torch.tensor(mt, dtype=torch.int64),
                    "rng_version": version, **extra}, f)


def load_checkpoint(path: Path, model, optimizer, schedule, rng: random.Random,
                    generator: torch.Generator) -> dict:
    """Restore everything save_checkpoint wrote; returns the whole state (step and extras)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["generator"])
    rng.setstate((state["rng_version"], tuple(state["rng"].tolist()), None))
    return state
