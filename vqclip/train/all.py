"""`vqclip train all DATA --out DIR`: the VQGAN, the CLIP and the prior in order, then DIR/preset.yaml.

DIR/vqgan, DIR/clip and DIR/prior hold each recipe's output (and training state: `--resume`
continues whichever was interrupted; the finished ones are not trained again). The CLIP learns
from the new VQGAN's reconstructions when `clip.recon_fraction` is set, and the prior writes its
tokens. The preset names the three by absolute paths, so `vqclip "caption" --preset
DIR/preset.yaml` works from any folder; it starts each run from the prior's best of 8 samples,
held near that start, as the shapes preset does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..outputs import write_json, write_yaml
from . import clip as clip_recipe
from . import prior as prior_recipe
from . import vqgan as vqgan_recipe
from .common import open_vqgan
from .distributed import ranks_from_env


@dataclass
class AllConfig:
    vqgan: vqgan_recipe.VQGANTrainConfig = field(default_factory=vqgan_recipe.VQGANTrainConfig)
    clip: clip_recipe.ClipTrainConfig = field(default_factory=clip_recipe.ClipTrainConfig)
    prior: prior_recipe.PriorTrainConfig = field(default_factory=lambda: prior_recipe.PriorTrainConfig(
        eval_items=64, width=128, decoder_layers=3, encoder_layers=1))
    steps: int = 30  # the preset's generation steps
    init_weight: float = 20.0  # the preset's pull toward the prior's start


def finished(folder: Path, files: tuple[str, ...]) -> bool:
    return all((folder / name).is_file() for name in files)


def train(data: str | Path, out: str | Path, config: AllConfig, *, held_out: str | Path | None = None,
          template: str | None = None, resume: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train what is not finished yet, write OUT/preset.yaml; returns {recipe: metrics}."""
    out = Path(out).resolve()
    common = dict(held_out=held_out, template=template, device=device, progress=progress)
    metrics = {}
    if not (resume and finished(out / "vqgan", ("vqgan.yaml", "vqgan.safetensors", "vqgan-metrics.json"))):
        metrics["vqgan"] = vqgan_recipe.train(data, out / "vqgan", config.vqgan, resume=resume, **common)
    if not (resume and finished(out / "clip", ("clip.json", "clip.safetensors", "clip-metrics.json"))):
        vqgan = open_vqgan(str(out / "vqgan")) if config.clip.recon_fraction > 0 else None
        metrics["clip"] = clip_recipe.train(data, out / "clip", config.clip, vqgan=vqgan, resume=resume, **common)
    metrics["prior"] = prior_recipe.train(data, out / "prior", config.prior, vqgan=str(out / "vqgan"),
                                          size=config.vqgan.size, resume=resume, **common)
    if ranks_from_env().main:  # under torchrun, rank 0 writes
        write_yaml(out / "preset.yaml", preset(out, config))
        write_json(out / "metrics.json", metrics)
    return metrics


def preset(out: Path, config: AllConfig) -> dict:
    """A run preset over the three trained models (only what differs from the defaults)."""
    size = config.vqgan.size
    return {
        "description": f"trained by vqclip train all into {out}",
        "vqgan": {"config": str(out / "vqgan" / "vqgan.yaml"), "checkpoint": str(out / "vqgan" / "vqgan.safetensors")},
        "clip": {"models": [{"name": str(out / "clip" / "clip.json"),
                             "pretrained": str(out / "clip" / "clip.safetensors"), "weight": 1.0}]},
        "size": [size, size],
        "init": {"mode": "prior", "prior": str(out / "prior"), "prior_candidates": 8, "weight": config.init_weight},
        "steps": config.steps,
        "cutn": 16,
        "augmentations": "light",
        "save_every": 0,
        "precision": "fp32",
    }
