"""What a batch job can be: a registry of job kinds, and running one job into a folder.

A kind is one function `run(settings, folder, cache, device) -> JobOutput` registered with
`register_kind(name, run, check=..., resolve=...)`: `check` refuses bad settings before anything
runs, `resolve` gives the full settings the config hash is taken from (so that a changed preset
makes a finished job unfinished). Models go through the worker's ModelCache: jobs that share
model settings load them once per worker.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, first_line
from ..machine.threads import run_threads


@dataclass
class JobOutput:
    """What a job made: files in its folder (the final one first), a score, caption fields."""

    files: list[Path]
    score: float | None = None
    caption: dict = field(default_factory=dict)  # prompt, preset, seed: for the summary and contact sheet


@dataclass(frozen=True)
class JobKind:
    name: str
    run: Callable  # (settings, folder, cache, device) -> JobOutput
    check: Callable[[dict], None]  # raises UserError for settings the kind cannot run
    resolve: Callable[[dict], dict]  # the full settings the config hash is taken from


KINDS: dict[str, JobKind] = {}


def register_kind(name: str, run: Callable, check: Callable | None = None, resolve: Callable | None = None) -> None:
    """Add a job kind; without `check` any settings pass, without `resolve` they are hashed as given."""
    KINDS[name] = JobKind(name, run, check or _accept, resolve or _as_given)


def _accept(settings: dict) -> None:
    return None


def _as_given(settings: dict) -> dict:
    return settings


class ModelCache:
    """Loaded models by key, least recently used dropped first (a worker keeps a few at most)."""

    def __init__(self, capacity: int = 2):
        self.capacity, self.entries, self.loads = capacity, OrderedDict(), 0

    def get(self, key: str, load: Callable):
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        while len(self.entries) >= self.capacity:
            self.entries.popitem(last=False)
        self.entries[key] = load()
        self.loads += 1
        return self.entries[key]


WORKER_CACHE = ModelCache()  # one per process: a worker process or a Ray worker keeps it between jobs


def execute(kind: str, settings: dict, folder: Path, cache: ModelCache | None = None,
            device: str | None = None, threads: int | None = None) -> dict:
    """Run one job into `folder`; never raises for the job's own failure (it is recorded).

    Returns {"status", "error", "seconds", "score", "files" (relative to folder), "caption"}.
    A failure that is not a UserError is a bug somewhere: its traceback goes to error.txt.
    """
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record = {"status": "ok", "error": None, "score": None, "files": [], "caption": {}}
    try:
        with run_threads(threads):  # CPU results depend on the count: a batch can fix it
            output = KINDS[kind].run(settings, folder, cache or WORKER_CACHE, device)
        record.update(score=output.score, caption=output.caption,
                      files=[str(Path(p).resolve().relative_to(folder.resolve())) for p in output.files])
    except UserError as exc:
        record.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the batch; it is recorded
        record.update(status="failed", error=f"{type(exc).__name__}: {first_line(exc)} (see error.txt)")
        from ..atomic import atomic_write_text

        atomic_write_text(folder / "error.txt", traceback.format_exc())
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def clear_folder(folder: Path) -> Path:
    """A job runs again from nothing: files of an earlier attempt must not pass for its outputs."""
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.unlink()
    return folder

