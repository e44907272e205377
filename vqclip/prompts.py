"""Prompts: parsing `text:weight:stop`, image and noise prompts, timelines, and the loss terms.

Parsing is plain string work with one error type (UserError, one line). The loss terms take
embeddings as tensors: turning text or images into embeddings is the CLIP wrapper's job.

The weight/stop rule (`text[:weight[:stop]]`), read from the RIGHT:

1. The last ':'-segment is the weight, or the last two are weight and stop, only when each is a
   plain number (`2`, `-1`, `1.5`, `.5`, `1e-1`, surrounding spaces allowed; `inf`/`nan` count as
   numbers so that they can be refused) and some text is left before them.
2. Times and ratios stay text: a weight made of bare digits whose ':' directly follows a digit
   ("10:30", "16:9", "10:30:15") is part of the text. To weight such a text, put a space before
   the colon ("a clock at 10:30 :2") or write the weight with a point ("a clock at 10:30:2.0").
   A signed or decimal weight is never a time ("a clock at 10:30:0.5" is weight 0.5).
3. A URL's port is not a weight: "https://host:8080" (scheme, host, no path) stays whole.
4. Everything else stays text: "C:\\img.png", "https://x.org/a.png", "a:b", "a red circle:1:x".
   So `rsplit(':')` never cuts a Windows path or a URL, and "C:\\img.png:2" is weight 2.
5. A segment in a number position that is an attempted but broken number ("1.2.3", "--1", "1e")
   is a UserError naming it, as are a non-finite weight, a NaN or +inf stop, and a weight with no
   text (":2"). Words are never errors: they are text.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .grad import replace_grad

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.A | re.I)
# Signs, digits and points, maybe an exponent: what a mistyped number looks like. "3d", "4k",
# "e4" or "3-1" do not match, so they stay text; "1.2.3", "--1", "1e" or "1..2" do.
_BROKEN_NUMBER = re.compile(r"[+-]*[\d.]+(?:[eE][+-]*[\d.]*)?", re.A)  # and holds a digit
_BARE_DIGITS = re.compile(r"\d+", re.A)
_URL_WITHOUT_PATH = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_HOW_TO = "weights and stops look like 2, -1, 0.5 or 1e-1"


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: text (or an image path/URL), its weight (negative pushes away) and its stop."""

    text: str
    weight: float = 1.0
    stop: float = float("-inf")

    def __post_init__(self):
        # Presets build specs directly, so the checks live here and not only in the parser.
        if not isinstance(self.text, str) or not self.text.strip():
            raise UserError(f"empty prompt {self.text!r}: give some text")
        if not math.isfinite(self.weight):
            raise UserError(f"prompt {self.text!r}: the weight must be a finite number, got {self.weight}")
        if math.isnan(self.stop) or self.stop == float("inf"):
            raise UserError(f"prompt {self.text!r}: the stop must be a number or -inf, got {self.stop}")


def _number(segment: str, whole: str) -> float | None:
    """The float in `segment`, None if it is text; a UserError if it is a broken number."""
    segment = segment.strip()
    if _NUMBER.fullmatch(segment):
        return float(segment)
    if _BROKEN_NUMBER.fullmatch(segment) and re.search(r"\d", segment, re.A):
        raise UserError(f"prompt {whole!r}: {segment!r} is not a number ({_HOW_TO})")
    return None


def _is_time_or_port(text: str, weight_segment: str, keep_times: bool) -> bool:
    """True when `text:weight_segment` is one thing (a time, a ratio, a URL port), not a weighting."""
    bare = _BARE_DIGITS.fullmatch(weight_segment.strip()) is not None
    if keep_times and bare and text[-1:].isascii() and text[-1:].isdigit():
        return True
    return bare and _URL_WITHOUT_PATH.fullmatch(text.strip()) is not None


def _split_weights(s: str, keep_times: bool) -> PromptSpec:
    """Apply the rule in the module docstring; `keep_times` off for paths, where "10:30" is rare."""
    parts = s.split(":")
    # Try weight and stop first, then weight alone; the first reading that fits wins.
    for n_numbers in (2, 1):
        if len(parts) <= n_numbers:
            continue
        text = ":".join(parts[:-n_numbers])
        numbers = parts[-n_numbers:]
        values = []
        for segment in reversed(numbers):  # right to left: a word on the right ends the search
            value = _number(segment, s)
            if value is None:
                break
            values.append(value)
        if len(values) < n_numbers or _is_time_or_port(text, numbers[0], keep_times):
            continue
        if not text.strip():
            raise UserError(f"prompt {s!r} has a weight but no text")
        weight = values[-1]
        stop = values[0] if n_numbers == 2 else float("-inf")
        return PromptSpec(text.strip(), weight, stop)
    return PromptSpec(s.strip())


def parse_prompt(s: str) -> PromptSpec:
    """`text[:weight[:stop]]` -> PromptSpec, by the rule in the module docstring."""
    if not s.strip():
        raise UserError("empty prompt: give some text, e.g. 'a red circle:1'")
    return _split_weights(s, keep_times=True)


def parse_image_prompt(s: str) -> PromptSpec:
    """`PATH[:weight[:stop]]` -> PromptSpec whose text is the path or URL (kept whole).

    As parse_prompt, except that a path ending in digits may take a bare weight
    ("frame_0010:2"): times are a text thing, URLs' ports still are not weights.
    """
    if not s.strip():
        raise UserError("empty image prompt: give a path or URL, e.g. 'photo.png:0.5'")
    return _split_weights(s, keep_times=False)


def parse_noise_prompt(s: str) -> tuple[int, float]:
    """`seed[:weight]` -> (seed, weight): a prompt toward a random embedding drawn from `seed`."""
    seed_text, colon, weight_text = s.strip().partition(":")
    if not re.fullmatch(r"\d+", seed_text.strip(), re.A) or int(seed_text) >= 2**63:
        raise UserError(f"noise prompt {s!r}: the seed must be a whole number from 0 to 2**63-1, e.g. '3:0.5'")
    weight = 1.0
    if colon:
        if not _NUMBER.fullmatch(weight_text.strip()):
            raise UserError(f"noise prompt {s!r}: {weight_text.strip()!r} is not a number ({_HOW_TO})")
        weight = float(weight_text)
        if not math.isfinite(weight):
            raise UserError(f"noise prompt {s!r}: the weight must be a finite number")
    return int(seed_text), weight


def _split(s: str, separator: str, what: str, example: str) -> list[str]:
    """The non-empty, stripped pieces of `s` between `separator`s; none at all is a UserError."""
    pieces = [piece.strip() for piece in s.split(separator)]
    pieces = [piece for piece in pieces if piece]
    if not pieces:
        raise UserError(f"no prompt in {what}{s!r}: give some text, e.g. {example!r}")
    return pieces


def split_prompts(s: str) -> list[str]:
    """Several prompts in one argument, separated by '|'; spaces stripped, empty pieces dropped."""
    return _split(s, "|", "", "a red circle | a blue background:0.5")


def parse_prompts(s: str) -> list[PromptSpec]:
    """split_prompts then parse_prompt: 'a red circle | a blue background:0.5' -> two specs."""
    return [parse_prompt(piece) for piece in split_prompts(s)]


def split_story(s: str) -> list[str]:
    """The phrases of a story, separated by '^'; each may hold '|' prompts. Empty phrases dropped."""
    return _split(s, "^", "story ", "a red circle ^ a blue square")


@dataclass
class PromptTimeline:
    """Which prompts are active at each step: entries of (first step, prompts), sorted, first at 0.

    With `period`, the timeline repeats every `period` steps (a looping story).
    """

    entries: list[tuple[int, tuple[PromptSpec, ...]]]
    period: int | None = None
    _starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self._starts = [start for start, _ in self.entries]
        if not self.entries or self._starts[0] != 0 or self._starts != sorted(set(self._starts)):
            raise ValueError(f"timeline entries must start at step 0 and increase: {self._starts}")
        if self.period is not None and self.period <= self._starts[-1]:
            raise ValueError(f"period {self.period} must be past the last entry ({self._starts[-1]})")

    def prompts_at(self, step: int) -> list[PromptSpec]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.period is not None:
            step %= self.period
        return list(self.entries[bisect.bisect_right(self._starts, step) - 1][1])

    def changes_at(self, step: int) -> bool:
        """True at step 0 and wherever the active prompts differ from the step before (re-embed)."""
        return step == 0 or self.prompts_at(step) != self.prompts_at(step - 1)


def timeline_from_story(texts: list[str], story_every: int, loop: bool = False) -> PromptTimeline:
    """Story mode: phrase i is active for steps [i*story_every, (i+1)*story_every).

    `texts` are the phrases; any that still hold '^' are split, so ["a ^ b"] works. After the last
    phrase the story stays on it (the final image shows the end of the story) unless `loop`.
    """
    if isinstance(story_every, bool) or not isinstance(story_every, int) or story_every < 1:
        raise UserError(f"story_every must be a whole number of steps >= 1, got {story_every!r}")
    phrases = [phrase for text in texts for phrase in split_story(text)]
    if not phrases:
        raise UserError("no prompt: the story has no phrases")
    entries = [(i * story_every, tuple(parse_prompts(phrase))) for i, phrase in enumerate(phrases)]
    return PromptTimeline(entries, period=len(phrases) * story_every if loop else None)


def timeline_from_schedule(schedule: dict[int, str]) -> PromptTimeline:
    """An explicit schedule {first step: prompts}, e.g. {0: "a forest", 100: "a city | night:0.5"}.

    Keys are whole numbers >= 0 (digit strings are accepted, as YAML/JSON may give them). When
    there is no key 0 the earliest entry applies from step 0: there is nothing else to show.
    """
    if not schedule:
        raise UserError("the prompt schedule is empty: give at least {0: 'some text'}")
    entries: dict[int, tuple[PromptSpec, ...]] = {}
    for key, text in schedule.items():
        if isinstance(key, str) and re.fullmatch(r"\s*\d+\s*", key, re.A):
            key = int(key)
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise UserError(f"prompt schedule key {key!r} is not a step (a whole number >= 0)")
        if key in entries:
            raise UserError(f"prompt schedule has step {key} twice")
        if not isinstance(text, str):
            raise UserError(f"prompt schedule step {key}: expected prompt text, got {text!r}")
        try:
            entries[key] = tuple(parse_prompts(text))
        except UserError as error:
            raise UserError(f"prompt schedule step {key}: {error}") from None
    steps = sorted(entries)
    return PromptTimeline([(0 if i == 0 else step, entries[step]) for i, step in enumerate(steps)])


# ---- loss terms -------------------------------------------------------------------------------


def spherical_distance(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """2·asin(|x̂ − ê|/2)², which is θ²/2 for the angle θ between x and e; over the last dim.

    Both are normalised here and the maths runs in float32: in half precision asin of a small chord
    loses every digit. The chord is clamped to 1 so rounding cannot make asin return NaN.
    """
    x = F.normalize(x.float(), dim=-1)
    e = F.normalize(e.float(), dim=-1)
    chord = (x - e).norm(dim=-1).div(2).clamp(max=1.0)
    return chord.arcsin().pow(2).mul(2)


class EmbeddingPrompt(nn.Module):
    """A prompt as a loss term: pull image embeddings toward a target (or push, for weight < 0).

    forward(image_embeddings [N, D]) = |w| · mean over cutouts of sign(w)·d, where d is the
    spherical distance. Cutouts with sign(w)·d < stop add nothing to the gradient (they are close
    enough): the forward value is unchanged, the backward goes through max(sign(w)·d, stop).
    """

    def __init__(self, embedding: torch.Tensor, weight: float = 1.0, stop: float = float("-inf")):
        super().__init__()
        embedding = embedding.detach()
        if embedding.dim() == 2 and embedding.shape[0] == 1:
            embedding = embedding[0]
        if embedding.dim() != 1:
            raise ValueError(f"one target embedding [D] per prompt, got shape {tuple(embedding.shape)}")
        if not math.isfinite(weight) or math.isnan(stop):
            raise ValueError(f"weight must be finite and stop not NaN, got {weight}, {stop}")
        self.register_buffer("embedding", F.normalize(embedding.float(), dim=-1))
        self.weight = float(weight)
        self.stop = float(stop)

    @classmethod
    def from_spec(cls, spec: PromptSpec, embedding: torch.Tensor) -> EmbeddingPrompt:
        return cls(embedding, spec.weight, spec.stop)

    def forward(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        sign = math.copysign(1.0, self.weight) if self.weight else 0.0
        signed = sign * spherical_distance(image_embeddings, self.embedding)
        # torch.where, not torch.maximum: at a tie maximum splits the gradient in halves, and the
        # rule is that the gradient flows in full wherever sign(w)·d >= stop.
        above_stop = torch.where(signed >= self.stop, signed, signed.new_tensor(self.stop))
        return abs(self.weight) * replace_grad(signed, above_stop).mean()

    def extra_repr(self) -> str:
        return f"dim={self.embedding.shape[0]}, weight={self.weight}, stop={self.stop}"


def noise_embedding(seed: int, dim: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """A random unit embedding [dim] that depends only on `seed` (drawn on the CPU, so every
    device and every run gets the same one), for noise prompts."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    vector = torch.randn(dim, generator=generator, dtype=torch.float64)
    return F.normalize(vector, dim=0).to(device=device, dtype=dtype)
