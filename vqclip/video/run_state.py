"""A video run folder: what the job is, which frames are finished, and how one frame is optimised.

Layout of a video run folder:
  config.yaml            the resolved config (seed included)
  job.json               the command (animate | interpolate | restyle) and its inputs
  keys/NNNNN.{png,pt}    interpolate: each key's reconstruction and latent
  frames/NNNNN.png       each finished frame, and frames/NNNNN.pt its latent (written last: the
                         mark that the frame is finished)
  frames/NNNNN/          the frame's own generation run (config, log, state), when it was optimised
A killed run continues from the last finished frame; each frame's work is seeded from the run's
seed and the frame number, so the frames come out the same as in a run never interrupted.
"""

from __future__ import annotations

import copy
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .. import outputs
from ..config import build_config, read_yaml, to_dict, validate
from ..errors import UserError
from ..interrupt import Interrupted

JOB_FILE = "job.json"
KINDS = ("animate", "interpolate", "restyle")


@dataclass
class VideoJob:
    kind: str  # animate | interpolate | restyle
    inputs: list[str]  # interpolate: the keys; restyle: the input video; animate: none
    config: DictConfig
    run_dir: Path
    stop: Any = None  # a vqclip.interrupt.StopFlag: true once Ctrl-C or SIGTERM arrived between frames


def create_job(kind: str, inputs: list[str], config: DictConfig) -> VideoJob:
    """A new run folder holding the config (its seed chosen now, so a resumed run repeats it)."""
    if config.seed is None:
        config.seed = secrets.randbelow(2**31)
    title = (list(config.prompts) or [str(v) for v in config.video.timeline.values()] or inputs or [kind])[0]
    run_dir = outputs.prepare_run_dir(config.run_dir) if config.run_dir else \
        outputs.new_run_dir(config.outputs_root, f"{kind} {title}")
    outputs.write_yaml(run_dir / "config.yaml", to_dict(config))
    outputs.write_json(run_dir / JOB_FILE, {"kind": kind, "inputs": list(inputs)})
    return VideoJob(kind, list(inputs), config, run_dir)


def load_job(run_dir: str | Path, overrides: dict | None = None) -> VideoJob:
    """The job of an existing video run folder, to continue it."""
    run_dir = Path(run_dir)
    job_file = run_dir / JOB_FILE
    if not job_file.is_file() or not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a vqclip video run folder (no {JOB_FILE} and config.yaml): "
                        "give the folder a `vqclip video` run wrote")
    try:
        job = json.loads(job_file.read_text(encoding="utf-8"))
        kind, inputs = job["kind"], [str(item) for item in job["inputs"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{job_file} is damaged ({type(e).__name__}): start the video again") from None
    if kind not in KINDS:
        raise UserError(f"{job_file} names an unknown video kind {kind!r}")
    stored = read_yaml(run_dir / "config.yaml")
    stored["run_dir"] = str(run_dir)
    return VideoJob(kind, inputs, build_config(None, {**stored, **(overrides or {})}), run_dir)


class FrameStore:
    """Finished frames (PNG + latent) in one folder; a frame counts once its latent is written.

    With a `stop` flag (Ctrl-C or SIGTERM seen between two frames' runs), saving a frame ends
    the video run there: everything finished is on disk, and --resume continues from it.
    """

    def __init__(self, folder: Path, stop=None):
        self.folder, self.stop = folder, stop

    def png(self, index: int) -> Path:
        return self.folder / f"{index:05d}.png"

    def latent(self, index: int) -> Path:
        return self.folder / f"{index:05d}.pt"

    def work_dir(self, index: int) -> Path:
        return self.folder / f"{index:05d}"

    def done(self, index: int) -> bool:
        return self.latent(index).is_file() and self.png(index).is_file()

    def load(self, index: int) -> torch.Tensor:
        return outputs.load_latent(self.latent(index))

    def save(self, index: int, z: torch.Tensor, image: torch.Tensor, metadata: dict) -> None:
        outputs.save_png(self.png(index), image, {**metadata, "frame": index})
        outputs.save_latent(self.latent(index), z)  # last: the mark that this frame is finished
        if self.stop:
            raise Interrupted(f"stopped by signal {self.stop.signal} after frame {index}")

    def image(self, index: int) -> torch.Tensor:
        return outputs.load_image(self.png(index), what="frame")[0]


def fixed_size(config: DictConfig) -> tuple[int, int]:
    """(width, height) from the config; every frame of a video has the same, so size=auto is refused."""
    if not OmegaConf.is_list(config.size):
        raise UserError(f"size={config.size} is for single images: a video needs one size for all its frames, "
                        "e.g. --size 256 256")
    return int(config.size[0]), int(config.size[1])


def derive_config(config: DictConfig, changes: dict[str, Any]) -> DictConfig:
    """A copy of config with dotted keys replaced (`{"init.mode": "latent", "steps": 20}`)."""
    derived = copy.deepcopy(config)
    for key, value in changes.items():
        try:
            OmegaConf.update(derived, key, value, merge=False)
        except (OmegaConfBaseException, ValueError, TypeError) as e:  # a wrong type for the key
            raise UserError(f"cannot set {key}={value!r}: {(str(e).splitlines() or [''])[0]}") from None
    validate(derived)
    return derived


def optimise_frame(config: DictConfig, models, work_dir: Path, *, z0: torch.Tensor | None, steps: int,
                   seed: int, size: tuple[int, int], changes: dict[str, Any] | None = None) -> torch.Tensor:
    """One frame: `generate.run` from z0 (or from the config's init when None) for `steps` steps.

    The frame gets its own run folder (config, log, state) under the video's, so its steps are
    logged like any run's; returns the optimised latent (1 × C × h × w, on the models' device).
    """
    from ..generation import run

    work_dir.mkdir(parents=True, exist_ok=True)
    frame_changes: dict[str, Any] = {"steps": steps, "seed": seed % 2**31, "run_dir": str(work_dir),
                                     "output": None, "batch_size": 1, "size": list(size)}
    if z0 is not None:
        init_path = work_dir / "init.pt"
        outputs.save_latent(init_path, z0)
        frame_changes.update({"init.mode": "latent", "init.latent": str(init_path)})
    frame_changes.update(changes or {})
    result = run(derive_config(config, frame_changes), models=models)
    return result.z[:1].to(models.device)


@torch.no_grad()
def decode_latent(vqgan, z: torch.Tensor) -> torch.Tensor:
    """The picture of a latent, 3 × H × W in [0, 1] (quantised first, as every frame is)."""
    return vqgan.decode(vqgan.quantize(z))[0]


@torch.no_grad()
def encode_image(vqgan, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """3 × H × W in [0, 1] → 1 × C × h × w."""
    return vqgan.encode(image.unsqueeze(0).to(device))
