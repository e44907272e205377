"""What every resumable loop shares: the learning-rate shape, the training state file, the random streams.

One home for the shapes recipes (vqclip/shapes/train_*.py) and the prior (vqclip/prior/train.py),
so that neither package imports the other. A training state (model, optimiser, schedule, step and
every random stream) is one file, written atomically, so a run killed at any moment continues with
`--resume` and ends with the same weights as one never stopped. Generation runs save the same
random streams in their state.pt, in the same layout (vqclip/rng.py).
Which dtype a training step computes in is decided in vqclip/precision.py (`training_autocast`).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch

from .atomic import atomic_open
from .rng import restore_rng, rng_state


def warmup_cosine(warmup: int, steps: int):
    """A LambdaLR factor: linear warm-up, then a cosine decay to zero at `steps`."""
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))


def save_checkpoint(path: Path, step: int, model, optimizer, schedule, rng: random.Random,
                    generator: torch.Generator, **extra) -> None:
    """The whole training state after `step` steps, atomically; `extra` holds the loop's own items."""
    with atomic_open(path) as f:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "step": step, "rng": rng_state(generator, rng), **extra}, f)


def load_checkpoint(path: Path, model, optimizer, schedule, rng: random.Random,
                    generator: torch.Generator) -> dict:
    """Restore everything save_checkpoint wrote; returns the whole state (step and extras)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    saved = state["rng"]
    if isinstance(saved, torch.Tensor):  # a state file from before the streams were saved as one dict
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["generator"])
        rng.setstate((state["rng_version"], tuple(saved.tolist()), None))
    else:
        restore_rng(saved, generator, rng)
    return state
