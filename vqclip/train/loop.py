"""The loop every recipe runs, and what makes it resumable: the learning-rate shape, the training
state file, the random streams.

One shape for the three models, in the spirit of k-diffusion's samplers: `fit(...)` takes a
`step(index) -> figures` function (one update) and an `evaluate(done) -> figures` callback, and
does the rest the same way for all: the progress bar, the history, the state written on schedule,
and Ctrl-C. A training state (model, optimiser, schedule, step and every random stream) is one
file, written atomically, so a run killed at any moment continues with `--resume` and ends with
the same weights as one never stopped. On Ctrl-C or SIGTERM the loop finishes its step, writes the
state and raises Interrupted. Generation runs save the same random streams in their state.pt, in
the same layout (vqclip/rng.py). Which dtype a step computes in is decided in vqclip/machine/precision.py.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import trange

from ..atomic import atomic_open
from ..errors import UserError
from ..interrupt import Interrupted, StopFlag, stop_on_signals
from ..rng import restore_rng, rng_state
from . import distributed

# What --resume lets differ from the stored run: these change neither the model's sizes, nor the
# data, nor the weights up to the step reached. `steps` may only grow: the cosine is stretched to
# the new end, so from the resume step on the rate is what a run of that many steps has there.
CHANGEABLE_ON_RESUME = ("steps", "eval_every", "sample_every", "checkpoint_every")


def warmup_cosine(warmup: int, steps: int):
    """A LambdaLR factor: linear warm-up, then a cosine decay to zero at `steps`."""
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))


@dataclass
class TrainState:
    """What a recipe's state file holds, and where: the model, its optimiser and schedule, the random
    streams the data is drawn with, and `extra()`: the recipe's own items (a discriminator, code use).
    `settings_key` names the entry the settings are stored under."""

    path: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    rng: random.Random
    generator: torch.Generator
    extra: Callable[[], dict] = dict
    settings_key: str = "config"
    history: list = field(default_factory=list)
    step: int = 0

    def save(self, step: int, settings: dict) -> None:
        """The whole state after `step` steps, atomically."""
        with atomic_open(self.path) as f:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "schedule": self.schedule.state_dict(), "step": step,
                        "rng": rng_state(self.generator, self.rng), "history": self.history,
                        self.settings_key: settings, **self.extra()}, f)

    def resume(self, settings: dict) -> dict:
        """Restore the state of `--resume` after checking `settings` against the stored run's; returns
        the whole state (the recipe restores its own items from it)."""
        check_resumable(self.path, settings)
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:  # a state from before the settings were stored in it, other sizes
            raise UserError(f"{self.path} holds a model of other sizes than these settings: give the first "
                            "run's values, or train into another --out") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        saved = state["rng"]
        if isinstance(saved, torch.Tensor):  # a state file from before the streams were saved as one dict
            torch.set_rng_state(state["torch_rng"])
            self.generator.set_state(state["generator"])
            self.rng.setstate((state["rng_version"], tuple(saved.tolist()), None))
        else:
            restore_rng(saved, self.generator, self.rng)
        # The file does not hold the schedule's function (it is rebuilt from `steps`); once `steps`
        # is raised the next step must take the stretched schedule's rate, not the stored one.
        for group, rate, base in zip(self.optimizer.param_groups, self.schedule.lr_lambdas, self.schedule.base_lrs):
            group["lr"] = base * rate(self.schedule.last_epoch)
        self.step, self.history = int(state["step"]), list(state.get("history", []))
        return state


def fit(name: str, config, state: TrainState, step: Callable[[int], dict], *, every: int,
        evaluate: Callable[[int], dict], ranks: distributed.Ranks, device: torch.device, progress: bool) -> list:
    """Run `step(index)` for the steps from `state.step` to `config.steps`; returns the history.

    `step` makes one update and returns its figures (shown on the bar). Every `every` steps and at
    the end, rank 0 calls `evaluate(done)` with the model in eval mode, and the step's figures and
    the evaluation's join the history. The state is written every `config.checkpoint_every` steps,
    at the end, and after the step in which a signal came (then Interrupted is raised)."""
    settings = dataclasses.asdict(config)
    bar = trange(state.step, config.steps, initial=state.step, total=config.steps, disable=not progress, desc=name)
    with stop_on_signals() as stop:
        for index in bar:
            figures = step(index)
            bar.set_postfix({key: f"{value:.4g}" for key, value in figures.items()}, refresh=False)
            done = index + 1
            if ranks.main and (done % every == 0 or done == config.steps):
                state.model.eval()
                state.history.append({"step": done, **figures,
                                      **evaluate(done)})
                state.model.train()
            end_of_step(done, config, stop, state, settings, ranks, device)
    bar.close()
    return state.history


def stopping(flag: StopFlag, ranks: distributed.Ranks, device: torch.device) -> bool:
    """Whether the loop stops after this step: a signal reached this process (Ctrl-C, SIGTERM), or
    under torchrun any rank (they stop together, after the same step)."""
    if not ranks.several:
        return bool(flag)
    return distributed.total(torch.tensor([int(bool(flag))], device=device), ranks).item() > 0


def end_of_step(done: int, config, flag: StopFlag, state: TrainState, settings: dict, ranks: distributed.Ranks,
                device: torch.device) -> None:
    stop = stopping(flag, ranks, device)
    if ranks.main and (stop or done % config.checkpoint_every == 0 or done == config.steps):
        state.save(done, settings)
    if stop:
        how = f"signal {flag.signal}" if flag else "a signal to another rank"
        raise Interrupted(f"training stopped by {how} after step {done} of {config.steps}, its state saved in "
                          f"{state.path}")


def stored_settings(path: Path) -> dict | None:
    """The settings stored in the training state file `path`, read without loading the weights;
    None when there are none (a file from before they were stored)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state.get("config", state.get("train"))


def check_resumable(path: Path, settings: dict) -> None:
    """Before `--resume` loads the state in `path`: a UserError naming the first setting that differs
    from the stored run's (only CHANGEABLE_ON_RESUME may, and `steps` only grow)."""
    stored = stored_settings(path)
    if stored is None:
        return
    for key, new in settings.items():
        old = stored.get(key, new)
        if key == "steps" and new < old:
            raise UserError(f"steps={new} is fewer than the {old} that {path} trains toward: --resume can "
                            "only raise steps")
        if key not in CHANGEABLE_ON_RESUME and new != old:
            raise UserError(f"{key}={new} differs from {key}={old} stored in {path}: leave {key} out to "
                            "continue that run, or train into another --out")
    if set(stored) - set(settings):  # a setting this version no longer has
        raise UserError(f"{path} was written by another version of this recipe: train into another --out")
