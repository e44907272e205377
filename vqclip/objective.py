"""What the optimisation minimises: CLIP prompt losses over cutouts, plus the optional terms on the
picture (smoothness, mirror symmetry, a palette, a mask's kept pixels) and the init anchor.

Text targets are embedded once per CLIP model and text (a timeline only embeds what is new);
image and noise prompts once at the start. Each candidate of a batch has its own cutouts and its
own loss, so candidates never pull on each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .controls.palette import Palette
from .controls.symmetry import mirror_difference
from .cutouts import make_cutouts
from .errors import UserError
from .outputs import load_image
from .prompts import (
    EmbeddingPrompt,
    PromptSpec,
    PromptTimeline,
    noise_embedding,
    parse_image_prompt,
    parse_noise_prompt,
)


class Objective:
    """Callable (image, z, step) → {term name: loss} for `vqclip.optimize.optimize`."""

    def __init__(self, clip, timeline: PromptTimeline | None, *, image_prompts=(), noise_prompts=(),
                 cutn: int, cut_pow: float, cut_mode: str, noise_fac: float, augment=None,
                 generator: torch.Generator | None = None, anchor: torch.Tensor | None = None,
                 anchor_weight: float = 0.0, anchor_decay: float = 0.0, tv_weight: float = 0.0,
                 region: torch.Tensor | None = None, keep=None, tile: bool = False, symmetry: str = "none",
                 symmetry_weight: float = 0.0, palette: Palette | None = None, hold=None):
        self.clip, self.timeline = clip, timeline
        self.cut = dict(cutn=cutn, cut_pow=cut_pow, mode=cut_mode, noise_fac=noise_fac, augment=augment,
                        generator=generator, region=region, wrap=tile)
        self.tile = tile  # the picture wraps around: its edges are neighbours (vqclip.controls.tiling)
        self.symmetry, self.symmetry_weight = symmetry, symmetry_weight
        self.palette = palette.to(self._device) if palette is not None else None
        self.keep = keep  # image → the pull of a mask's kept pixels toward the start (vqclip.mask.Edit.keep_loss)
        self.hold = hold  # image → the pull toward hold.image (vqclip.controls.hold)
        self.anchor, self.anchor_weight, self.anchor_decay = anchor, anchor_weight, anchor_decay
        self.tv_weight = tv_weight
        self._text_cache: dict[tuple[int, str], torch.Tensor] = {}
        # Fixed prompts: (name, per-member EmbeddingPrompt list).
        self.fixed: list[tuple[str, list[EmbeddingPrompt]]] = []
        for text in image_prompts:
            spec = parse_image_prompt(text)
            picture = load_image(spec.text, what="image prompt").to(self._device)
            with torch.no_grad():
                targets = [m.encode_image(picture)[0] for m in clip.members]
            self.fixed.append((f"image {spec.text}", [EmbeddingPrompt(t, spec.weight, spec.stop) for t in targets]))
        for text in noise_prompts:
            seed, weight = parse_noise_prompt(text)
            self.fixed.append((f"noise {seed}", [
                EmbeddingPrompt(noise_embedding(seed, m.embed_dim, device=self._device), weight)
                for m in clip.members]))
        if timeline is None and not self.fixed:
            raise UserError("no prompt: give a text prompt, --image-prompt PATH or noise_prompts=[SEED:WEIGHT]")

    @property
    def _device(self) -> torch.device:
        return self.clip.members[0].mean.device

    def text_prompts(self, step: int) -> list[tuple[str, list[EmbeddingPrompt]]]:
        if self.timeline is None:
            return []
        return [(spec.text, [self._text_prompt(i, member, spec) for i, member in enumerate(self.clip.members)])
                for spec in self.timeline.prompts_at(step)]

    def _text_prompt(self, index: int, member, spec: PromptSpec) -> EmbeddingPrompt:
        key = (index, spec.text)
        if key not in self._text_cache:
            self._text_cache[key] = member.encode_text([spec.text])[0]
        return EmbeddingPrompt(self._text_cache[key], spec.weight, spec.stop)

    def __call__(self, image: torch.Tensor, z: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        prompts = self.text_prompts(step) + self.fixed
        batch = image.shape[0]
        terms: dict[str, torch.Tensor] = {}
        sizes = {m.input_size for m in self.clip.members}
        cutouts = {size: make_cutouts(image, size, **self.cut) for size in sorted(sizes)}
        for index, member in enumerate(self.clip.members):
            embeddings = member.encode_image(cutouts[member.input_size])
            per_candidate = embeddings.view(-1, batch, embeddings.shape[-1])  # box-major: [cutn, B, D]
            label = f"{member.name}/" if len(self.clip.members) > 1 else ""
            for name, targets in prompts:
                loss = sum(targets[index](per_candidate[:, b]) for b in range(batch))
                terms[f"{label}{name}"] = terms.get(f"{label}{name}", 0) + member.weight * loss
        if self.tv_weight:  # total variation: favours flat regions over the high-frequency patterns CLIP likes
            terms["smoothness"] = self.tv_weight * total_variation(image, self.tile).sum()
        if self.symmetry != "none" and self.symmetry_weight:
            terms["symmetry"] = self.symmetry_weight * mirror_difference(image, self.symmetry).sum()
        if self.palette is not None and self.palette.weight:
            terms["palette"] = self.palette.loss(image, step)
        if self.keep is not None:
            terms["keep"] = self.keep(image)
        if self.hold is not None:
            terms["hold"] = self.hold(image)
        if self.anchor is not None and self.anchor_weight:
            weight = self.anchor_weight * (1 - self.anchor_decay) ** step
            terms["anchor"] = weight / 2 * F.mse_loss(z, self.anchor, reduction="none").mean((1, 2, 3)).sum()
        return terms

    def scores(self, images: torch.Tensor, step: int) -> list[float]:
        """CLIP score of each candidate (whole image, no cutouts): Σ weights · cosine similarity."""
        from .models.clip import clip_scores

        targets = [(prompt[0].weight, [member_prompt.embedding for member_prompt in prompt])
                   for _, prompt in self.text_prompts(step) + self.fixed]
        return clip_scores(self.clip, images, targets).tolist()


def total_variation(image: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """The mean absolute step between neighbouring pixels, per image; with `wrap`, across the edges too."""
    if wrap:
        return ((image - image.roll(1, -1)).abs().mean((1, 2, 3)) + (image - image.roll(1, -2)).abs().mean((1, 2, 3)))
    return ((image[..., :, 1:] - image[..., :, :-1]).abs().mean((1, 2, 3))
            + (image[..., 1:, :] - image[..., :-1, :]).abs().mean((1, 2, 3)))
