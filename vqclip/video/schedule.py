"""Keyframed schedules: a number per frame from "0: 1.0, 30: 1.05, 60: 1.0", and the eases.

A schedule is a plain number (constant), a string of `frame: value` pairs separated by commas,
or a mapping {frame: value} (as YAML gives it). Before the first key the first value holds,
after the last key the last one; in between the value moves by an ease (linear, cosine or
ease-in-out). A malformed string is a UserError that points at the offending character.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UserError, unknown_choice


def ease_linear(t: float) -> float:
    return t


def ease_cosine(t: float) -> float:
    """Half a cosine: starts and ends gently, fastest in the middle."""
    return (1 - math.cos(math.pi * t)) / 2


def ease_in_out(t: float) -> float:
    """Smoothstep's big brother (quintic): flatter at both ends than cosine."""
    return t * t * t * (t * (6 * t - 15) + 10)


EASES: dict[str, Callable[[float], float]] = {"linear": ease_linear, "cosine": ease_cosine,
                                              "ease-in-out": ease_in_out}


def get_ease(name: str, what: str = "ease") -> Callable[[float], float]:
    if name not in EASES:
        raise unknown_choice(what, name, EASES)
    return EASES[name]


@dataclass(frozen=True)
class Schedule:
    """Keyframes (frame, value), sorted by frame; `at(frame)` eases between them."""

    keys: tuple[tuple[int, float], ...]
    ease: str = "linear"

    def at(self, frame: float) -> float:
        frames = [key for key, _ in self.keys]
        index = bisect.bisect_right(frames, frame)
        if index == 0:
            return self.keys[0][1]
        if index == len(self.keys):
            return self.keys[-1][1]
        (f0, v0), (f1, v1) = self.keys[index - 1], self.keys[index]
        t = get_ease(self.ease)((frame - f0) / (f1 - f0))
        return v0 + (v1 - v0) * t


_FRAME = re.compile(r"\s*(\d+)\s*", re.ASCII)
_VALUE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*", re.ASCII)
_EXAMPLE = 'write "frame: value, ..." e.g. "0: 1.0, 30: 1.05, 60: 1.0"'


def _bad(name: str, text: str, position: int, expected: str) -> UserError:
    found = repr(text[position]) if position < len(text) else "the end"
    return UserError(f"{name}: malformed schedule {text!r}: at character {position + 1} ({found}) "
                     f"expected {expected}; {_EXAMPLE}")


def parse_schedule_text(text: str, name: str = "schedule") -> list[tuple[int, float]]:
    """'0: 1.0, 30: 1.05' -> [(0, 1.0), (30, 1.05)]; errors name the character where it goes wrong."""
    if not text.strip():
        raise UserError(f"{name}: the schedule is empty; {_EXAMPLE}")
    constant = _VALUE.fullmatch(text)
    if constant:
        return [(0, float(constant.group(1)))]
    keys: list[tuple[int, float]] = []
    position = 0
    while True:
        match = _FRAME.match(text, position)
        if not match:
            raise _bad(name, text, _skip_spaces(text, position), "a frame number (a whole number >= 0)")
        frame, position = int(match.group(1)), match.end()
        if position >= len(text) or text[position] != ":":
            raise _bad(name, text, position, f"':' after frame {frame}")
        match = _VALUE.match(text, position + 1)
        if not match:
            raise _bad(name, text, _skip_spaces(text, position + 1), f"a number for frame {frame}")
        value, position = float(match.group(1)), match.end()
        if keys and frame <= keys[-1][0]:
            raise _bad(name, text, text.rfind(str(frame), 0, position),
                       f"a frame after {keys[-1][0]} (keys must increase)")
        keys.append((frame, value))
        if position == len(text):
            return keys
        if text[position] != ",":
            raise _bad(name, text, position, "',' before the next key")
        position += 1


def _skip_spaces(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def parse_schedule(spec: Any, name: str = "schedule", ease: str = "linear") -> Schedule:
    """A number, a "frame: value, ..." string or a {frame: value} mapping -> Schedule."""
    get_ease(ease, "schedule_ease")
    if isinstance(spec, bool):
        raise UserError(f"{name}: expected a number or a schedule, not {spec!r}; {_EXAMPLE}")
    if isinstance(spec, (int, float)):
        keys = [(0, float(spec))]
    elif isinstance(spec, str):
        keys = parse_schedule_text(spec, name)
    elif hasattr(spec, "items"):
        keys = []
        for frame, value in sorted(_mapping_items(spec, name)):
            keys.append((frame, value))
        if not keys:
            raise UserError(f"{name}: the schedule is empty; {_EXAMPLE}")
    else:
        raise UserError(f"{name}: expected a number or a schedule, not {type(spec).__name__}; {_EXAMPLE}")
    bad = [value for _, value in keys if not math.isfinite(value)]
    if bad:
        raise UserError(f"{name}: schedule values must be finite numbers, not {bad[0]}")
    return Schedule(tuple(keys), ease)


def _mapping_items(spec, name: str) -> list[tuple[int, float]]:
    items = []
    for frame, value in spec.items():
        if isinstance(frame, str) and frame.strip().isdigit():
            frame = int(frame)
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise UserError(f"{name}: schedule key {frame!r} is not a frame (a whole number >= 0)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{name}: frame {frame} needs a number, not {value!r}")
        items.append((frame, float(value)))
    return items


SCHEDULE_KEYS = ("video.zoom", "video.angle", "video.translate_x", "video.translate_y", "video.smoothing")


def quote_schedule_overrides(dotlist: list[str]) -> list[str]:
    """`video.zoom=0: 1.0, 30: 1.05` as typed on a command line is not valid YAML (a bare "a: b,
    c: d"); quote such schedule values so that they arrive as the string the user wrote."""
    quoted = []
    for item in dotlist:
        key, _, value = item.partition("=")
        is_schedule_key = key in SCHEDULE_KEYS or key.startswith("video.schedules.")
        if is_schedule_key and ":" in value and not value.lstrip().startswith(("{", "'", '"')):
            item = f"{key}='{value.replace(chr(39), chr(39) * 2)}'"
        quoted.append(item)
    return quoted
