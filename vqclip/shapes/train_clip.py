"""Recipe: a tiny CLIP for the shapes world — open_clip's own CLIP class, tokenizer and loss, trained
by the general recipe's loop (vqclip/train/clip.py) on batches drawn from the world.

The image tower is open_clip's ModifiedResNet (layers 1,1,1,1, width 16), the text tower a
3-layer transformer of width 64, so the state dict has the OpenAI layout and the model loads
through vqclip's ordinary CLIP loader from a model-config JSON shipped beside the weights.

What the data does, and why:
- Half of every batch is groups of images that differ only in shape: a prototype learned colour
  at once but left shape at chance until it had to tell such images apart.
- A share of the images goes through the shapes VQGAN first, so the CLIP judges the VQGAN's
  reconstructions (what it sees during generation) as well as clean drawings.
- Horizontal flips, small shifts and per-image noise, as the cutouts of a generation add.

(The PGD fine-tuning and the robustness measurement once tried on this recipe were research, not
part of the product: git history holds them, last in commit 47041b5.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..outputs import write_json
from ..train import clip as general_clip
from . import world

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@dataclass
class ClipRecipe:
    steps: int = 1500
    contrast_groups: int = 16  # groups of 3 images that differ only in shape ...
    random_images: int = 48  # ... plus this many random ones per batch
    recon_fraction: float = 0.05  # share of images reconstructed by the VQGAN first (costly: 40 ms each)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    noise: float = 0.05  # up to this much Gaussian noise per image
    eval_every: int = 500  # zero-shot figures into the history
    checkpoint_every: int = 100
    eval_images: int = 256
    seed: int = 0
    bf16: bool = True  # autocast where bf16 is fast (vqclip.precision.fast_bf16: CPUs with bf16 matrix units)
    model_cfg: dict = field(default_factory=lambda: {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    })


def build_model(recipe: ClipRecipe):
    import open_clip

    return open_clip.CLIP(**recipe.model_cfg)


def augment(images: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Flip half the images left-right (triangles stay upright), shift by up to 4 px, add noise."""
    n = len(images)
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    shifts = torch.randint(-4, 5, (n, 2), generator=generator).tolist()
    images = torch.stack([image.roll(tuple(shift), dims=(1, 2)) for image, shift in zip(images, shifts)])
    scale = torch.rand(n, 1, 1, 1, generator=generator) * noise
    return (images + scale * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def training_batch(rng, recipe: ClipRecipe, generator: torch.Generator, vqgan=None):
    contrast, contrast_captions, _ = world.shape_contrast_batch(rng, recipe.contrast_groups)
    random_images, random_captions, _ = world.batch(rng, recipe.random_images)
    images = torch.cat([contrast, random_images])
    if vqgan is not None and recipe.recon_fraction > 0:
        chosen = torch.rand(len(images), generator=generator) < recipe.recon_fraction
        if chosen.any():
            with torch.no_grad():
                images[chosen] = vqgan.decode(vqgan.quantize(vqgan.encode(images[chosen]))).clamp(0, 1)
    return augment(images, recipe.noise, generator), contrast_captions + random_captions


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def zero_shot_classes() -> tuple[list[tuple[str, str, str]], list[str]]:
    """All 168 (colour, shape, background) triples of the world and their captions 'a C S on a B background'."""
    classes = [(c, s, b) for c in world.COLOURS for s in world.SHAPES for b in world.COLOURS if b != c]
    texts = [world.render("a {colour} {shape} on a {background} background",
                          world.Scene(s, c, b, 0.5, 0.5, 0.5)) for c, s, b in classes]
    return classes, texts


@torch.no_grad()
def zero_shot(model, tokenizer, images: torch.Tensor, scenes) -> dict:
    """Accuracy of the best of all 168 captions, per attribute."""
    classes, texts = zero_shot_classes()
    text = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    image = F.normalize(model.encode_image(normalize(images)), dim=-1)
    picks = [classes[i] for i in (model.logit_scale.exp() * image @ text.T).argmax(1).tolist()]
    total = len(scenes)
    return {"colour": sum(p[0] == s.colour for p, s in zip(picks, scenes)) / total,
            "shape": sum(p[1] == s.shape for p, s in zip(picks, scenes)) / total,
            "background": sum(p[2] == s.background for p, s in zip(picks, scenes)) / total}


def evaluate(model, tokenizer, count: int, vqgan=None) -> dict:
    """Zero-shot accuracy on `count` held-out drawings and on their VQGAN reconstructions."""
    samples = world.held_out(count)
    images = torch.stack([world.to_tensor(image) for image, _, _ in samples])
    scenes = [scene for _, _, scene in samples]
    result = {"clean": zero_shot(model, tokenizer, images, scenes)}
    if vqgan is not None:
        with torch.no_grad():
            recons = vqgan.decode(vqgan.quantize(vqgan.encode(images))).clamp(0, 1)
        result["vqgan_reconstructions"] = zero_shot(model, tokenizer, recons, scenes)
    return result


def general_config(recipe: ClipRecipe) -> general_clip.ClipTrainConfig:
    """The general recipe's settings for this one (its batches and loss are the world's own)."""
    return general_clip.ClipTrainConfig(
        steps=recipe.steps, batch_size=3 * recipe.contrast_groups + recipe.random_images,
        size=recipe.model_cfg["vision_cfg"]["image_size"], lr=recipe.lr, weight_decay=recipe.weight_decay,
        warmup=recipe.warmup, noise=recipe.noise, eval_every=recipe.eval_every,
        checkpoint_every=recipe.checkpoint_every, seed=recipe.seed, bf16=recipe.bf16, model="tiny")


def train(out: Path, recipe: ClipRecipe, vqgan=None, *, resume: bool = False, progress: bool = True) -> dict:
    """vqclip.train.clip's loop on the world's batches with open_clip's loss; writes out/clip.json +
    out/clip.safetensors and out/clip-metrics.json (zero-shot accuracy per attribute)."""
    import open_clip

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    rng = world.make_rng(recipe.seed)
    model = build_model(recipe)
    loss = open_clip.ClipLoss()
    history = general_clip.fit(
        model, recipe.model_cfg, MEAN, STD, lambda: training_batch(rng, recipe, generator, vqgan),
        lambda image, text, scale, captions: loss(image, text, scale),
        lambda model, tokenizer, preprocess: evaluate(model, tokenizer, recipe.eval_images, vqgan), out,
        general_config(recipe), rng=rng, generator=generator, resume=resume, device=torch.device("cpu"),
        progress=progress)
    metrics = {k: v for k, v in history[-1].items() if k not in ("step", "loss")}
    write_json(out / "clip-metrics.json", {**metrics, "history": history, "recipe": asdict(recipe)})
    return metrics
