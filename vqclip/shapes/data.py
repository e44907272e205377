"""The shapes world as training data: drawn on the fly by the recipes (`vqclip train all shapes
--out DIR`, or one model: `vqclip train vqgan shapes --out DIR`), or written out as a captioned
folder like any other (`vqclip data shapes OUT`).

Drawn on the fly the world is endless and seeded, and the recipes take the settings the shipped
shapes models were trained with (RECIPE_SETTINGS) before the user's `key=value`. What the world's
data does beyond a folder's, and why:
- VQGAN: no discriminator, random 32 px crops of the 64 px drawings (a quarter of the pixels, the
  same local statistics), and the pixel judge's verdict on the reconstructions among the figures.
  taming normalises with GroupNorm (32 groups), so with ch below 64 a group holds one channel or
  none and flat colours are normalised away: ch 64 with fewer blocks trains, ch 32 stalled.
- CLIP: half of every batch is groups of 3 images that differ only in shape (without them colour
  is learnt at once and shape stays at chance), and a share of the images goes through the VQGAN
  first (`recon_fraction`), so the CLIP judges what it sees during generation; CLIP's own loss,
  since the world's captions rarely repeat; zero-shot accuracy per attribute over the world's 168
  (colour, shape, background) captions.
- prior: every image is seen under each caption template that applies to it (the prior learns the
  words better, and encoding is the slow part), the VQGAN's interchangeable flat codes are merged
  (`merge_flat_codes`, vqclip/prior/flat_codes.py), and the samples of the prior alone are graded
  by the pixel judge. What mattered is measured in docs/experiments.md
  (#2026-11-22--the-shapes-worlds-prior-merged-flat-codes-and-the-anchored-preset).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from . import judge, world

NAME = "shapes"

# The settings the shipped models were trained with (vqclip/shapes/weights/*-metrics.json).
RECIPE_SETTINGS = {
    "vqgan": {"steps": 3000, "size": 64, "crop": 32, "disc_start": -1, "sample_every": 500, "held_out": 256,
              "n_embed": 512, "ch": 64},
    "clip": {"steps": 1500, "batch_size": 96, "size": 64, "shift": 4, "flip": True, "eval_every": 500,
             "held_out": 256, "text_width": 64, "recon_fraction": 0.05},
    "prior": {"steps": 3000, "lr": 2e-3, "eval_items": 256, "encoder_layers": 1, "decoder_layers": 3,
              "text_length": 16, "merge_flat_codes": True, "world_images": 12288},
}


def make_rng(seed: int, split: str = "train"):
    return world.make_rng(seed, split)


def held_out_images(count: int) -> torch.Tensor:
    return torch.stack([world.to_tensor(image) for image, _, _ in world.held_out(count)])


def image_batch(rng, batch_size: int) -> torch.Tensor:
    return world.batch(rng, batch_size)[0]


def caption_batch(rng, batch_size: int) -> tuple[torch.Tensor, list[str]]:
    """Half the batch in groups that differ only in shape, the rest drawn at random."""
    groups = batch_size // 2 // len(world.SHAPES)
    contrast, contrast_captions, _ = world.shape_contrast_batch(rng, groups)
    images, captions, _ = world.batch(rng, batch_size - len(contrast))
    return torch.cat([contrast, images]), contrast_captions + captions


def clip_loss():
    """open_clip's CLIP loss as the recipe calls it (image, text, scale, captions)."""
    import open_clip

    loss = open_clip.ClipLoss()
    return lambda image, text, scale, captions: loss(image, text, scale)


def scene_dict(scene) -> dict:
    return {"colour": scene.colour, "shape": scene.shape, "background": scene.background}


@torch.no_grad()
def vqgan_figures(model, count: int) -> dict:
    """How often the pixel judge finds in the reconstructions of `count` held-out drawings what
    their captions say."""
    samples = world.held_out(count)
    images = torch.stack([world.to_tensor(image) for image, _, _ in samples])
    reconstruction = model.decode(model.quantize(model.encode(images))).clamp(0, 1)
    agree = [all(v is not False for v in judge.score_against(judge.judge(r), scene_dict(scene)).values())
             for r, (_, _, scene) in zip(reconstruction, samples)]
    return {"judge_agreement": round(sum(agree) / len(agree), 4)}


def zero_shot_classes() -> tuple[list[tuple[str, str, str]], list[str]]:
    """All 168 (colour, shape, background) triples of the world and their captions 'a C S on a B background'."""
    classes = [(c, s, b) for c in world.COLOURS for s in world.SHAPES for b in world.COLOURS if b != c]
    texts = [world.render("a {colour} {shape} on a {background} background",
                          world.Scene(s, c, b, 0.5, 0.5, 0.5)) for c, s, b in classes]
    return classes, texts


@torch.no_grad()
def zero_shot(model, tokenizer, preprocess, images: torch.Tensor, scenes) -> dict:
    """Accuracy of the best of all 168 captions, per attribute."""
    classes, texts = zero_shot_classes()
    text = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    image = F.normalize(model.encode_image(preprocess(images)), dim=-1)
    picks = [classes[i] for i in (model.logit_scale.exp() * image @ text.T).argmax(1).tolist()]
    total = len(scenes)
    return {"colour": sum(p[0] == s.colour for p, s in zip(picks, scenes)) / total,
            "shape": sum(p[1] == s.shape for p, s in zip(picks, scenes)) / total,
            "background": sum(p[2] == s.background for p, s in zip(picks, scenes)) / total}


@torch.no_grad()
def clip_figures(model, tokenizer, preprocess, count: int, vqgan=None) -> dict:
    """Zero-shot accuracy on `count` held-out drawings and on their VQGAN reconstructions."""
    samples = world.held_out(count)
    images = torch.stack([world.to_tensor(image) for image, _, _ in samples])
    scenes = [scene for _, _, scene in samples]
    result = {"clean": zero_shot(model, tokenizer, preprocess, images, scenes)}
    if vqgan is not None:
        recons = vqgan.decode(vqgan.quantize(vqgan.encode(images))).clamp(0, 1)
        result["vqgan_reconstructions"] = zero_shot(model, tokenizer, preprocess, recons, scenes)
    return result


def world_items(count: int, seed: int, split: str) -> list[tuple]:
    return list(itertools.islice(world.captioned_scenes(world.make_rng(seed, split)), count))


def prior_tokens(out: Path, vqgan, description: dict, count: int, seed: int, split: str, *, resume: bool,
                 progress: bool):
    """The first `count` (scene, caption) items of a split as VQGAN tokens in `out` (resumable; reused
    when it holds the same items)."""
    from ..prior import data as prior_data

    sources = [f"shapes/{split}/{seed}/{i}" for i in range(count)]
    if out.exists():
        stored = prior_data.load_data(out)
        if stored.sources == sources:
            return stored
    items = world_items(count, seed, split)

    def batches(start: int, batch_size: int = 64):
        for first in range(start, len(items), batch_size):
            chunk = items[first:first + batch_size]
            yield torch.stack([world.to_tensor(world.draw(scene)) for scene, _ in chunk]), [c for _, c in chunk]

    return prior_data.build_data(batches, sources, vqgan, description, out, resume=resume or out.exists(),
                                 progress=progress)


def every_caption(data, seed: int, split: str):
    """One row per (image, applicable caption template): ~6 captions per encoded image, at no encoding cost."""
    from ..prior import data as prior_data

    index, captions = [], []
    for i, (scene, _) in enumerate(world_items(len(data.captions), seed, split)):
        for text in world.all_captions(scene):
            index.append(i)
            captions.append(text)
    return prior_data.PriorData(data.image_tokens[index], captions, prior_data.bpe_tensor(captions), data.vqgan,
                                [data.sources[i] for i in index])


def prior_data(out: Path, vqgan, description: dict, config, *, resume: bool, progress: bool):
    """(training data, held-out data) of the prior: `config.world_images` drawings under every caption
    that applies, and `config.eval_items` held-out ones."""
    data = prior_tokens(out / "data.pt", vqgan, description, config.world_images, config.seed, "train",
                        resume=resume, progress=progress)
    held = prior_tokens(out / "held-out.pt", vqgan, description, config.eval_items, config.seed, "held-out",
                        resume=resume, progress=progress)
    return every_caption(data, config.seed, "train"), held


def prior_figures(folder: Path, vqgan, clip, candidates: int = 4, seed: int = 0, prompts: int = 24) -> dict:
    """The prior alone: one image per default eval prompt (best of `candidates` by CLIP), judged."""
    from ..prior.sample import sample_images, settings_for
    from ..prior.weights import load_prior
    from .evaluate import default_prompts

    prior = load_prior(folder)
    rows = []
    for index, prompt in enumerate(default_prompts()[:prompts]):
        settings = settings_for(prior, count=candidates, seed=seed + index)
        result = sample_images(prior, vqgan, prompt, settings, clip=clip)
        scores = judge.score_against(judge.judge(result.images[0]), world.parse_caption(prompt))
        rows.append({f"{k}_ok": v for k, v in scores.items()})
    return {key: round(sum(bool(r[f"{key}_ok"]) for r in rows) / len(rows), 4)
            for key in ("colour", "shape", "background")} | {"prompts": len(rows), "candidates": candidates}


def write_shapes(out: str | Path, count: int = 4096, held_out: int = 256, seed: int = 0) -> dict:
    """`vqclip data shapes OUT`: `count` drawings of the world's training stream as OUT/train and the
    fixed held-out drawings as OUT/held-out, each a .png with its caption in a same-name .txt."""
    from PIL import Image

    from ..data.pairs import write_pair

    out = Path(out)
    splits = {"train": ((image, text) for image, text, _ in world.stream(seed)),
              "held-out": ((image, text) for image, text, _ in world.held_out(held_out))}
    for split, items in splits.items():
        for index, (image, text) in enumerate(itertools.islice(items, count if split == "train" else held_out)):
            write_pair(out / split, f"{index:05d}", Image.fromarray(image), text)
    return {"train": count, "held-out": held_out}
