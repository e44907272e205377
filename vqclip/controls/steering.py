"""Steering a run while it goes: its prompts (with their weights) and its learning rate, changed
from a step on.

The web UI sends a change; the run applies it from its next step and records it in its config as
`steering` ({steps done: {prompts: "a | b:0.5", lr: 0.05}}), in config.yaml, state.pt and the
PNG's metadata, and in that step's line of log.jsonl. A run from that config (`--from`,
`--resume`) makes the same changes at the same steps, so it draws the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import UserError
from ..prompts import PromptTimeline, parse_prompts

STEERABLE = ("prompts", "lr")


def check_change(change, where: str = "a steering change") -> dict:
    """A change as the run records it ({prompts: text, lr: number}); a one-line error for a bad one."""
    if not hasattr(change, "keys") or not change or set(change) - set(STEERABLE):
        raise UserError(f"{where} sets prompts, lr or both, not {dict(change) if hasattr(change, 'keys') else change}")
    checked = {}
    prompts = change.get("prompts")
    if prompts is not None:
        if isinstance(prompts, Sequence) and not isinstance(prompts, str) and all(isinstance(text, str)
                                                                                   for text in prompts):
            prompts = " | ".join(prompts)  # a list, as generate() takes them: the same prompts side by side
        if not isinstance(prompts, str):
            raise UserError(f"{where}: prompts are a text or a list of texts, not {prompts!r}")
        parse_prompts(prompts)  # the prompt syntax's own one-line errors
        checked["prompts"] = prompts
    if change.get("lr") is not None:
        lr = change["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
            raise UserError(f"{where}: lr must be a positive finite number, not {lr!r}")
        checked["lr"] = float(lr)
    if not checked:
        raise UserError(f"{where} is empty: give new prompts, an lr or both")
    return checked


def check_steering(steering) -> None:
    for step, change in steering.items():
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise UserError(f"steering key {step!r} is not a step (a whole number >= 0)")
        check_change(change, f"steering at step {step}")


def steered_timeline(timeline: PromptTimeline | None, steering) -> PromptTimeline | None:
    """The timeline with each steering change's prompts in force from its step on."""
    changes = sorted((int(step), check_change(change)["prompts"]) for step, change in steering.items()
                     if change.get("prompts") is not None)
    if not changes:
        return timeline
    first = changes[0][0]
    entries = []
    if timeline is not None:
        if timeline.period is None:
            entries = [(start, specs) for start, specs in timeline.entries if start < first]
        else:  # a looping story, unrolled up to the first change
            entries = [(start + lap * timeline.period, specs) for lap in range(-(-first // timeline.period))
                       for start, specs in timeline.entries if start + lap * timeline.period < first]
    entries += [(step, tuple(parse_prompts(text))) for step, text in changes]
    if entries[0][0] != 0:  # steered from the start of a run that had no prompts
        entries.insert(0, (0, entries[0][1]))
    return PromptTimeline(entries)


def lr_after(steering, step: int) -> float | None:
    """The learning rate the steering sets once `step` steps are done, or None."""
    change = steering.get(step)
    return None if change is None else change.get("lr")
