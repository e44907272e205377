"""One generation run's folder as it fills (the formats are vqclip/outputs.py's; the random streams
are saved through vqclip/rng.py).

RunWriter writes log.jsonl every step, progress images and state.pt on their schedules, and the
ranked final images at the end; every write goes through vqclip.outputs (atomic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf

from . import outputs
from .config import to_dict, to_yaml
from .controls.palette import Palette, palette_share, quantized
from .controls.symmetry import mirror_difference
from .controls.tiling import seam_ratio, tiled
from .optimize import Step
from .rng import rng_state

if TYPE_CHECKING:
    from .objective import Objective


@dataclass
class GenerationResult:
    images: torch.Tensor  # B × 3 × H × W in [0, 1], best first
    z: torch.Tensor  # B × C × h × w, same order
    scores: list[float]  # CLIP score of each image, best first
    losses: list[dict] = field(default_factory=list)  # per step: {"step", "loss", "losses", "lr"}
    config: dict = field(default_factory=dict)  # the resolved config (seed included)
    run_dir: Path | None = None
    final_path: Path | None = None
    steps_done: int = 0


class RunWriter:
    """Everything a run leaves on disk: log.jsonl, progress/, state.pt, final.png (all atomic)."""

    def __init__(self, run_dir: Path, config: DictConfig, optimizer, scheduler, generator: torch.Generator,
                 anchor: torch.Tensor | None, start_step: int = 0, edit=None, window=None):
        self.run_dir, self.config, self.generator, self.anchor = run_dir, config, generator, anchor
        self.edit = edit  # a masked edit (vqclip.mask.Edit): written images are its composites
        self.window = window  # a windowed decoder (vqclip.controls.canvas): a step decodes one window
        self.optimizer, self.scheduler = optimizer, scheduler
        log = run_dir / "log.jsonl"
        # Resuming: keep the log of the steps the state holds; the later ones are done again.
        self.history = [r for r in outputs.read_jsonl(log) if r.get("step", 0) <= start_step] \
            if start_step and log.exists() else []
        outputs.write_jsonl(log, self.history)
        self.last_good: tuple[int, torch.Tensor, torch.Tensor] | None = None  # step, z, image

    def metadata(self, step: int) -> dict:
        config = to_dict(self.config)
        return {"config": config, "prompts": config["prompts"], "seed": config["seed"], "step": step,
                "versions": outputs.environment_info()}

    def on_step(self, info: Step) -> None:
        record = {"step": info.step, "loss": info.loss, "losses": info.losses, "lr": info.lr}
        if info.step in self.config.steering:  # what changes from the next step on (vqclip.controls.steering)
            record["steered"] = OmegaConf.to_container(self.config.steering[info.step])
        self.history.append(record)
        outputs.append_jsonl(self.run_dir / "log.jsonl", record)
        image = info.image if self.window is None else None  # decoded whole only when written
        self.last_good = (info.step, info.z.clone(), image)  # z is updated in place by the next step
        every = self.config.save_every
        if every and info.step % every == 0:
            outputs.save_png(self.run_dir / "progress" / f"{info.step:05d}.png",
                             _strip(self.written(self._whole(info.z, image))), self.metadata(info.step))
        every = self.config.checkpoint_every
        if every and info.step % every == 0:
            self.save_state(info.z, info.step)

    def save_state(self, z: torch.Tensor, step: int) -> None:
        outputs.save_state(self.run_dir / "state.pt", {
            "z": z.detach().cpu(), "step": step, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "anchor": self.anchor.cpu() if self.anchor is not None else None,
            "rng": rng_state(self.generator), "config": to_yaml(self.config),
            "mask_reference": self.edit.reference.cpu() if self.edit is not None else None,
            "window": self.window.state() if self.window is not None else None})

    def written(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded images as they are written: a masked edit's kept region composited in."""
        return self.edit.composite(images) if self.edit is not None else images

    def save_last_good(self) -> None:
        """After a numerical fault: the image and latent of the last finite step."""
        if self.last_good is not None:
            step, z, image = self.last_good
            outputs.save_png(self.run_dir / "final.png", self.written(self._whole(z, image))[0], self.metadata(step))
            self.save_state(z, step)

    def _whole(self, z: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        if image is not None:
            return image
        with torch.no_grad():
            return self.window.whole(z).float()

    def finish(self, z: torch.Tensor, vqgan, objective: Objective, steps_done: int) -> GenerationResult:
        with torch.no_grad():
            images = self.written(vqgan.decode(vqgan.quantize(z)))
        scores = objective.scores(images, max(steps_done - 1, 0))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        images, z, scores = images[order], z[order], [scores[i] for i in order]
        self.save_state(z, steps_done)
        metadata = {**self.metadata(steps_done), **form_figures(self.config, images[0], objective.palette)}
        final = self.run_dir / "final.png"
        self.save_final(final, images[0], {**metadata, "score": scores[0]}, objective.palette)
        if len(order) > 1:
            for rank, (image, score) in enumerate(zip(images, scores)):
                self.save_final(self.run_dir / f"candidate-{rank}.png", image, {**metadata, "score": score},
                                objective.palette)
        if self.config.output:
            self.save_final(Path(self.config.output), images[0], {**metadata, "score": scores[0]}, objective.palette)
        return GenerationResult(images=images.cpu(), z=z.cpu(), scores=scores, losses=self.history,
                                config=to_dict(self.config), run_dir=self.run_dir,
                                final_path=Path(self.config.output) if self.config.output else final,
                                steps_done=steps_done)

    def save_final(self, path: Path, image: torch.Tensor, metadata: dict, palette: Palette | None) -> None:
        """A finished image as its settings ask: indexed to the palette, and with its 3 × 3 tiling
        beside it (PATH-3x3.png) for a tile."""
        def picture(image: torch.Tensor):
            if palette is not None and self.config.palette.quantize:
                return quantized(image, palette.colours, self.config.palette.dither)
            return image

        outputs.save_image(path, picture(image), metadata)
        if self.config.tile:
            outputs.save_image(path.with_name(f"{path.stem}-3x3{path.suffix}"), picture(tiled(image)), metadata)


def form_figures(config: DictConfig, image: torch.Tensor, palette: Palette | None) -> dict:
    """How well the image keeps the form asked of it (written with it): the seam of a tile, the
    mirror difference, the share of pixels of the palette's colours (before indexing)."""
    figures = {}
    if config.tile:
        figures["seam_ratio"] = round(seam_ratio(image), 4)
    if config.symmetry != "none":
        figures["mirror_difference"] = round(float(mirror_difference(image[None].float(), config.symmetry)[0]), 5)
    if palette is not None:
        figures["palette_share"] = round(palette_share(image[None], palette.colours), 4)
    return figures


def _strip(images: torch.Tensor) -> torch.Tensor:
    """A batch side by side, as one 3 × H × (B·W) picture."""
    return torch.cat(list(images), dim=-1)
