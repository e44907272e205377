"""The CLIP's own generations as negatives: a pool of generation chains the CLIP recipe learns to reject.

Why: gradient ascent through the VQGAN finds textures that a small CLIP rates as the prompt, and
PGD in a small ball around drawings (adversarial.py) never reaches them. Each chain here is what a
run from random codes does: a latent, a caption, and Adam steps of CLIP guidance through the
shapes VQGAN (straight-through codes, cutouts, light augmentations, noise). The recipe advances a
few chains per training step and appends their images to the batch as extra choices for every
caption, so the drawing of a caption must score above what guidance has made of it so far.

The chains persist across training steps (persistent contrastive divergence, as energy-based
models are trained) and restart from random codes after `lifetime` guidance steps, so the
negatives cover a run from its first steps to its last. Their state is part of the recipe's
checkpoint: a resumed recipe continues every chain where it stopped.
"""

from __future__ import annotations

import dataclasses
import random

import torch
import torch.nn.functional as F

from ..cutouts import build_augmentations, make_cutouts
from ..errors import UserError
from . import world

BETAS, EPSILON = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as a run uses


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, negative_features: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """open_clip's symmetric CLIP loss over matched pairs, each caption also choosing among `negative_features`.

    Image i matches caption i. Images pick among the captions as usual; each caption picks among
    the matched images *and* the negatives, which match no caption. With no negatives this is
    exactly open_clip.ClipLoss.
    """
    labels = torch.arange(len(image_features), device=image_features.device)
    per_image = logit_scale * image_features @ text_features.T
    per_text = logit_scale * text_features @ torch.cat([image_features, negative_features]).T
    return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


class ChainPool:
    """`size` generation chains over the shapes VQGAN; `take` picks the next few, round robin."""

    def __init__(self, vqgan, size: int, *, lifetime: int, rng: random.Random, generator: torch.Generator):
        if size < 1 or lifetime < 1:
            raise ValueError(f"a chain pool needs size >= 1 and lifetime >= 1, not {size} and {lifetime}")
        self.vqgan, self.lifetime, self.rng, self.generator = vqgan, lifetime, rng, generator
        self.z = torch.empty(size, vqgan.embed_dim, *self._grid())
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.z), torch.zeros_like(self.z)
        self.steps = torch.zeros(size, dtype=torch.long)
        self.scenes: list[world.Scene] = [None] * size  # type: ignore[list-item]
        self.captions: list[str] = [""] * size
        self.cursor = 0
        for index in range(size):
            self._restart(index)

    def _grid(self) -> tuple[int, int]:
        side = world.IMAGE_SIZE // self.vqgan.factor
        return side, side

    def _restart(self, index: int) -> None:
        """A new scene and caption, random codes, fresh Adam moments: a run's first step."""
        scene = world.sample_scene(self.rng)
        self.scenes[index], self.captions[index] = scene, world.caption(scene, self.rng)
        tokens = torch.randint(self.vqgan.n_embed, (1, *self._grid()), generator=self.generator)
        self.z[index] = self.vqgan.tokens_to_z(tokens)[0].detach()
        self.exp_avg[index], self.exp_avg_sq[index], self.steps[index] = 0, 0, 0

    def take(self, count: int) -> torch.Tensor:
        """The next `count` chains (restarting those that have lived `lifetime` steps)."""
        indices = (self.cursor + torch.arange(count)) % len(self.z)
        self.cursor = (self.cursor + count) % len(self.z)
        for index in indices.tolist():
            if self.steps[index] >= self.lifetime:
                self._restart(index)
        return indices

    def advance(self, indices: torch.Tensor, clip, tokenizer, normalize, *, steps: int, cutn: int, lr: float,
                noise_fac: float = 0.1, augmentations: str = "light") -> None:
        """`steps` Adam steps of CLIP guidance on the chosen chains (gradients reach the latents only)."""
        augment = build_augmentations(augmentations)
        with torch.no_grad():
            text = clip.encode_text(tokenizer([self.captions[i] for i in indices.tolist()]), normalize=True)
        z = self.z[indices].clone()
        exp_avg, exp_avg_sq, done = self.exp_avg[indices], self.exp_avg_sq[indices], self.steps[indices]
        for _ in range(steps):
            z.requires_grad_(True)
            image = self.vqgan.decode(self.vqgan.quantize(z))
            cutouts = make_cutouts(image, world.IMAGE_SIZE, cutn, noise_fac=noise_fac, augment=augment,
                                   generator=self.generator)
            views = clip.encode_image(normalize(cutouts), normalize=True).view(cutn, len(z), -1)  # box-major
            loss = -(views * text).sum(-1).mean(0).sum()
            (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                done = done + 1
                exp_avg = BETAS[0] * exp_avg + (1 - BETAS[0]) * grad
                exp_avg_sq = BETAS[1] * exp_avg_sq + (1 - BETAS[1]) * grad * grad
                shape = (-1, 1, 1, 1)
                corrected = (exp_avg / (1 - BETAS[0] ** done).view(shape)) / (
                    (exp_avg_sq / (1 - BETAS[1] ** done).view(shape)).sqrt() + EPSILON)
                z = torch.maximum(torch.minimum(z - lr * corrected, self.vqgan.z_max), self.vqgan.z_min)
        self.z[indices], self.exp_avg[indices], self.exp_avg_sq[indices], self.steps[indices] = (
            z.detach(), exp_avg, exp_avg_sq, done)

    @torch.no_grad()
    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """What the chosen chains draw now, [n, 3, 64, 64] in [0, 1]."""
        return self.vqgan.decode(self.vqgan.quantize(self.z[indices])).float()

    def drawings(self, indices: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Clean drawings of the chosen chains' scenes, with their captions: the matched pairs."""
        chosen = indices.tolist()
        images = torch.stack([world.to_tensor(world.draw(self.scenes[i])) for i in chosen])
        return images, [self.captions[i] for i in chosen]

    def state_dict(self) -> dict:
        scenes = [[getattr(scene, f.name) for f in dataclasses.fields(scene)] for scene in self.scenes]
        return {"z": self.z.clone(), "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "steps": self.steps.clone(), "scenes": scenes, "captions": list(self.captions),
                "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        if state["z"].shape != self.z.shape:
            raise UserError(f"the checkpoint's chain pool has shape {tuple(state['z'].shape)}, this recipe's "
                             f"{tuple(self.z.shape)}: resume with the recipe that wrote it")
        self.z, self.exp_avg, self.exp_avg_sq = state["z"], state["exp_avg"], state["exp_avg_sq"]
        self.steps, self.captions, self.cursor = state["steps"], list(state["captions"]), int(state["cursor"])
        self.scenes = [world.Scene(*fields) for fields in state["scenes"]]
