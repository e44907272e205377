"""What every resumable loop shares: the learning-rate shape, the training state file, the random streams.

One home for the shapes recipes (vqclip/shapes/train_*.py) and the prior (vqclip/prior/train.py),
so that neither package imports the other. A training state (model, optimiser, schedule, step and
every random stream) is one file, written atomically, so a run killed at any moment continues with
`--resume` and ends with the same weights as one never stopped. On Ctrl-C or SIGTERM a loop
finishes its step, writes the state and raises Interrupted (`end_of_step`). Generation runs save the same
random streams in their state.pt, in the same layout (vqclip/rng.py).
Which dtype a training step computes in is decided in vqclip/precision.py (`training_autocast`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import torch

from . import distributed
from .atomic import atomic_open
from .errors import UserError
from .interrupt import Interrupted, StopFlag
from .rng import restore_rng, rng_state


def apply_settings(config, settings: list[str]):
    """A copy of the dataclass `config` with `key=value` strings (YAML values) applied; unknown keys
    and wrong types are refused with the valid keys named (what `vqclip ... train` takes as settings)."""
    import yaml

    config = dataclasses.replace(config)
    known = {f.name for f in dataclasses.fields(config)}
    for item in settings:
        key, eq, text = item.partition("=")
        if not eq or key not in known:
            raise UserError(f"{item!r}: training settings are key=value with key one of {', '.join(sorted(known))}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"{key}={text!r} is not a value (write e.g. {key}=3, {key}=0.5 or {key}=[1,2])") from None
        expected = type(getattr(config, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if type(value) is not expected or (expected is list and not all(isinstance(v, int) for v in value)):
            raise UserError(f"{key} must be a {expected.__name__}, not {text!r}")
        setattr(config, key, value)
    return config


def warmup_cosine(warmup: int, steps: int):
    """A LambdaLR factor: linear warm-up, then a cosine decay to zero at `steps`."""
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))


def stopping(flag: StopFlag, ranks: distributed.Ranks, device: torch.device) -> bool:
    """Whether the loop stops after this step: a signal reached this process (Ctrl-C, SIGTERM), or
    under torchrun any rank (they stop together, after the same step)."""
    if not ranks.several:
        return bool(flag)
    return distributed.total(torch.tensor([int(bool(flag))], device=device), ranks).item() > 0


def end_of_step(done: int, config, flag: StopFlag, state_path: Path, save, ranks: distributed.Ranks,
                device: torch.device) -> None:
    """After step `done` of `config.steps`: rank 0 writes the state (`save()`) every
    `config.checkpoint_every` steps, at the end, and when a signal came; then a signal stops the
    loop with Interrupted (the command line adds how to resume)."""
    stop = stopping(flag, ranks, device)
    if ranks.main and (stop or done % config.checkpoint_every == 0 or done == config.steps):
        save()
    if stop:
        how = f"signal {flag.signal}" if flag else "a signal to another rank"
        raise Interrupted(f"training stopped by {how} after step {done} of {config.steps}, its state saved in "
                          f"{state_path}")


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
