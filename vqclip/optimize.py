"""The optimisation loop: a plain function over a latent, a decoder and a loss, with a callback.

Everything a run needs arrives as an argument; features (progress images, logs, state files,
live previews) are callbacks, not flags. The callback sees every step and may stop the loop by
returning False.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import trange

from .errors import UserError, unknown_choice


class NumericalError(UserError):
    """A loss term or the latent became NaN or Inf; the run stopped at the last good step."""


@dataclass
class Step:
    """What a callback sees after each optimiser step."""

    step: int  # 1-based: the number of steps done
    z: torch.Tensor  # the latent after this step (B × C × h × w), detached
    image: torch.Tensor  # the image decoded *before* this step's update (B × 3 × H × W), detached
    losses: dict[str, float]  # each loss term, summed over the batch
    loss: float  # their total
    lr: float


LossFunction = Callable[[torch.Tensor, torch.Tensor, int], dict[str, torch.Tensor]]


def optimize(z: torch.Tensor, decode: Callable[[torch.Tensor, int], torch.Tensor], loss_fn: LossFunction, *,
             steps: int, optimizer: torch.optim.Optimizer, scheduler=None,
             z_min: torch.Tensor | None = None, z_max: torch.Tensor | None = None, start_step: int = 0,
             callback: Callable[[Step], bool | None] | None = None, disable: bool | None = None) -> int:
    """Run steps `start_step`..`steps` of gradient descent on `z` (a leaf tensor in `optimizer`).

    Each step: image = decode(z, step); losses = loss_fn(image, z, step); backward; optimiser step;
    z clamped per channel to [z_min, z_max] (the codebook's range). Returns the last step done.
    """
    bar = trange(start_step, steps, disable=disable, unit="step", dynamic_ncols=True)
    step = start_step
    for step_index in bar:
        optimizer.zero_grad(set_to_none=True)
        image = decode(z, step_index)
        terms = loss_fn(image, z, step_index)
        total = sum(terms.values())
        values = {name: float(term.detach()) for name, term in terms.items()}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise NumericalError(f"the loss term {bad[0]!r} became {values[bad[0]]} at step {step_index + 1}; "
                                 "the last good image and state were kept: try a lower lr")
        total.backward()
        optimizer.step()
        with torch.no_grad():
            if z_min is not None:
                z.copy_(torch.maximum(torch.minimum(z, z_max), z_min))
            if not torch.isfinite(z).all():
                raise NumericalError(f"the latent z became NaN or Inf at step {step_index + 1}; "
                                     "the last good image and state were kept: try a lower lr")
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(sum(values.values()))
            else:
                scheduler.step()
        step = step_index + 1
        lr = optimizer.param_groups[0]["lr"]
        loss = sum(values.values())
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if callback is not None:
            info = Step(step, z.detach(), image.detach().float(), values, loss, lr)  # fp32 whatever the step's precision
            if callback(info) is False:
                break
    bar.close()
    return step


# These cannot drive this loop: LBFGS's step() needs a closure, SparseAdam sparse gradients.
UNSUITABLE_OPTIMIZERS = {"LBFGS", "SparseAdam"}


def optimizer_names() -> list[str]:
    return sorted(name for name, value in vars(torch.optim).items()
                  if isinstance(value, type) and issubclass(value, torch.optim.Optimizer)
                  and value is not torch.optim.Optimizer and name not in UNSUITABLE_OPTIMIZERS)


def make_optimizer(name: str, params, lr: float, extra: dict | None = None) -> torch.optim.Optimizer:
    """Any torch.optim optimiser by name (case-insensitive); an unknown name is an error, never Adam."""
    by_lower = {n.lower(): n for n in optimizer_names()}
    if name.lower() not in by_lower:
        raise unknown_choice("optimizer", name, optimizer_names())
    cls = getattr(torch.optim, by_lower[name.lower()])
    try:
        return cls(params, lr=lr, **(extra or {}))
    except TypeError as exc:
        raise UserError(f"optimizer {cls.__name__} does not take {extra}: {exc}") from None


LR_SCHEDULES = ("constant", "drops", "plateau")


def make_scheduler(kind: str, optimizer: torch.optim.Optimizer, steps: int, *, drops=(0.5, 0.8),
                   factor: float = 0.5, patience: int = 20):
    """constant: none; drops: multiply lr by `factor` at fractions of the run; plateau: when the loss stalls."""
    if kind == "constant":
        return None
    if kind == "drops":
        milestones = sorted({max(1, round(fraction * steps)) for fraction in drops})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=factor)
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=factor, patience=patience)
    raise unknown_choice("lr_schedule", kind, LR_SCHEDULES)
