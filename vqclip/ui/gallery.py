"""Past runs for the page's gallery, read from the outputs folder, and what "run again" needs.

A run folder is `<outputs_root>/<date>/<NNNN>-<slug>/` with a `final.png` that carries the run's
resolved config (vqclip.outputs.save_png), so the gallery needs no database: the files are the
record. Folders whose PNG cannot be read are skipped, never fatal: the outputs folder is the
user's, and may hold anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import outputs
from ..config import build_config
from ..errors import UserError


@dataclass(frozen=True)
class PastRun:
    image: Path  # the run's final.png
    run_dir: Path
    prompts: list[str]
    seed: int | None
    step: int  # the steps done when final.png was written
    steps: int  # the steps the run was asked for (more than `step`: it was stopped)
    score: float | None
    config: dict = field(repr=False)

    @property
    def stopped(self) -> bool:
        return self.step < self.steps

    @property
    def can_continue(self) -> bool:
        return (self.run_dir / "state.pt").is_file() or (self.run_dir / "state.prev.pt").is_file()

    def caption(self) -> str:
        prompt = " | ".join(self.prompts) or "(no prompt)"
        progress = f"{self.step} steps" if not self.stopped else f"stopped at {self.step}/{self.steps}"
        return f"{prompt} · seed {self.seed} · {progress}"


def find_runs(outputs_root: str | Path, limit: int = 60) -> list[PastRun]:
    """The newest `limit` runs under outputs_root (newest first, by final.png's modification time).

    An image that is a symlink (or lies in a linked folder) leading out of outputs_root is skipped:
    the page shows its visitors the outputs folder and nothing else.
    """
    root = Path(outputs_root)
    if not root.is_dir():
        return []
    inside = root.resolve()
    images = [path for path in root.glob("*/*/final.png") if path.is_file() and path.resolve().is_relative_to(inside)]
    images.sort(key=_mtime, reverse=True)
    runs = []
    for image in images:
        run = read_run(image)
        if run is not None:
            runs.append(run)
        if len(runs) >= limit:
            break
    return runs


def read_run(image: str | Path) -> PastRun | None:
    """The run a final.png belongs to, or None when it is not a readable vqclip image."""
    image = Path(image)
    try:
        metadata = outputs.read_metadata(image)
    except UserError:
        return None
    config = metadata.get("config")
    if not isinstance(config, dict):
        return None
    prompts = [str(p) for p in config.get("prompts") or []]
    score = metadata.get("score")
    return PastRun(image=image, run_dir=image.parent, prompts=prompts, seed=config.get("seed"),
                   step=int(metadata.get("step") or 0), steps=int(config.get("steps") or 0),
                   score=float(score) if isinstance(score, (int, float)) else None, config=config)


def rerun_config(run: PastRun, outputs_root: str | Path):
    """The same settings (seed included) for a new run, written to a new folder under outputs_root."""
    stored = dict(run.config)
    for key in ("run_dir", "output"):  # where to write is chosen anew, as `vqclip --from` does
        stored.pop(key, None)
    stored["outputs_root"] = str(outputs_root)
    stored["quiet"] = True
    return build_config(None, stored)


def settings_text(run: PastRun) -> str:
    """The run's whole resolved config as YAML, in the order the config schema gives."""
    import yaml

    return yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
