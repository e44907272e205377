"""Batch files: shared `defaults`, a `grid` whose every combination is a job, and a `jobs` list.

```yaml
defaults: {preset: shapes, steps: 30}
grid: {prompt: ["a red circle", "a blue square"], seed: [1, 2]}
jobs:
  - {prompt: "a green triangle", seed: 3}
```

Each job is `defaults ← grid combination` or `defaults ← jobs entry`, merged key by key (nested
mappings merge; dotted keys such as `init.weight: 0.5` are the same as `init: {weight: 0.5}`).
`kind:` picks what the job does (default `generate`). Everything is checked before any job runs,
and an error names the job, where it came from and the key, in one line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import merge_settings, read_yaml
from ..errors import UserError, closest, unknown_choice
from ..outputs import slugify

TOP_LEVEL_KEYS = ("defaults", "grid", "jobs")
MAX_JOBS = 100_000  # a grid this large is a typo (a list where a value was meant), not a plan


@dataclass(frozen=True)
class Job:
    """One unit of work: its place in the batch, its kind and its settings (keys as on the CLI)."""

    index: int  # position in the batch, from 0; names the job's folder
    settings: dict = field(hash=False)
    kind: str = "generate"
    origin: str = ""  # where the job came from, for error messages: "grid #3", "jobs[0]"
    swept: tuple[str, ...] = ()  # the grid's keys (dotted), shown in the contact sheet's captions

    def setting(self, dotted: str):
        """A setting by its dotted name ("init.weight"), or None."""
        value = self.settings
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    @property
    def title(self) -> str:
        prompt = self.settings.get("prompt", self.settings.get("prompts"))
        if isinstance(prompt, (list, tuple)):
            prompt = prompt[0] if prompt else None
        return str(prompt) if prompt else self.kind

    @property
    def name(self) -> str:
        """The job's folder in the batch's output folder: 003-a-red-circle."""
        return f"{self.index:03d}-{slugify(self.title, max_len=40)}"


def read_batch_file(path: str | Path) -> list[Job]:
    """Parse and check a batch YAML file (read safely: Python tags are refused)."""
    data = read_yaml(Path(path), what=f"{', '.join(TOP_LEVEL_KEYS)}")
    return parse_batch(data, source=str(path))


def parse_batch(data, source: str = "batch") -> list[Job]:
    """The jobs of a batch given as a mapping with `defaults`, `grid` and/or `jobs`."""
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping with {', '.join(TOP_LEVEL_KEYS)}, "
                        f"not a {type(data).__name__}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise UserError(f"{source}: unknown top-level key {key!r}{closest(str(key), TOP_LEVEL_KEYS)}; "
                            f"valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    defaults = _settings(data.get("defaults") or {}, f"{source}: defaults")
    grid = _grid(data.get("grid"), source)
    swept = tuple(str(key) for key in data["grid"]) if grid else ()
    entries = [(f"grid #{n}", combination) for n, combination in enumerate(grid)]
    listed = data.get("jobs") or []
    if not isinstance(listed, list):
        raise UserError(f"{source}: jobs must be a list of mappings, not a {type(listed).__name__}")
    entries += [(f"jobs[{n}]", _settings(entry, f"{source}: jobs[{n}]")) for n, entry in enumerate(listed)]
    if not entries:
        raise UserError(f"{source} holds no jobs: add a grid: of values to sweep or a jobs: list")
    if len(entries) > MAX_JOBS:
        raise UserError(f"{source} expands to {len(entries)} jobs, more than {MAX_JOBS}: check the grid")
    jobs = []
    for index, (origin, settings) in enumerate(entries):
        where = f"{source}: job {index} ({origin})"
        job = make_job(index, merge_settings(defaults, settings, where), origin, where)
        jobs.append(replace(job, swept=swept) if origin.startswith("grid") else job)
    return jobs


def jobs_from(items, source: str = "jobs") -> list[Job]:
    """What `vqclip.batch.run` accepts: Jobs, a list of setting mappings, a batch mapping or a file."""
    if isinstance(items, (str, Path)):
        return read_batch_file(items)
    if isinstance(items, dict):
        return parse_batch(items, source)
    items = list(items)
    if items and all(isinstance(item, Job) for item in items):
        if sorted(job.index for job in items) != list(range(len(items))):
            raise UserError(f"{source}: Job indexes must be 0..{len(items) - 1}, each once")
        return items
    return parse_batch({"jobs": items}, source)


def make_job(index: int, settings: dict, origin: str = "", where: str | None = None) -> Job:
    """A checked Job: its kind exists and the kind accepts its settings."""
    from .kinds import KINDS

    where = where or f"job {index}"
    settings = dict(settings)
    kind = settings.pop("kind", "generate")
    if kind not in KINDS:
        raise UserError(f"{where}: {unknown_choice('kind', str(kind), KINDS)}")
    try:
        KINDS[kind].check(settings)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return Job(index, settings, kind, origin)


def _grid(grid, source: str) -> list[dict]:
    """Every combination of the grid's values, the first key varying slowest."""
    if grid is None:
        return []
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{source}: grid must be a mapping of keys to lists of values")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: grid.{key} must be a non-empty list of values to sweep "
                            f"(a single value belongs in defaults)")
        axes.append([_settings({key: value}, f"{source}: grid.{key}") for value in values])
    count = 1
    for axis in axes:
        count *= len(axis)
    if count > MAX_JOBS:
        raise UserError(f"{source}: the grid expands to {count} jobs, more than {MAX_JOBS}")
    combinations = []
    for parts in itertools.product(*axes):
        combined: dict = {}
        for part in parts:
            combined = merge_settings(combined, part, f"{source}: grid")
        combinations.append(combined)
    return combinations


def _settings(entry, where: str) -> dict:
    """A mapping of settings with dotted keys expanded: {"init.weight": 1} → {"init": {"weight": 1}}."""
    if not isinstance(entry, dict):
        raise UserError(f"{where} must be a mapping of settings, not a {type(entry).__name__}")
    nested: dict = {}
    for key, value in entry.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise UserError(f"{where}: {key!r} is not a setting name")
        parts = key.split(".")
        for part in reversed(parts[1:]):
            value = {part: value}
        nested = merge_settings(nested, {parts[0]: value}, where)
    return nested
