"""Recipe: the shapes world's BART prior (`vqclip shapes train prior --out DIR`).

The shipped shapes VQGAN turns a 64 px image into a 16 × 16 grid of its 512 codes, so the prior
writes 256 tokens from a caption of at most a dozen words. Steps: (1) draw `items` captioned
training images from the world's seeded stream and encode them with the VQGAN into OUT/data.pt
(resumable, like `vqclip prior build-data`), and the held-out split into OUT/held-out.pt;
(2) merge the VQGAN's interchangeable flat codes (vqclip/prior/flat_codes.py), so that the prior
learns outlines instead of which of a dozen equivalent codes the encoder chose for the background;
(3) train a small prior on them (vqclip.prior.train: AdamW, warm-up + cosine, blank captions);
(4) grade it: sample each of the 24 colour × shape prompts, decode, and judge the pixels.
What mattered (enough images not to overfit, merged codes, superconditioning brought down to 2
for the sharper model, and CLIP ranking each sample by its worst view) is measured in
docs/experiments.md#2026-11-22--the-shapes-worlds-prior-merged-flat-codes-and-the-anchored-preset.
The text embedding keeps only the BPE ids the world's captions use (about 40 of open_clip's
49408): at width 128 the full vocabulary alone would weigh 12 MB in fp16.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..outputs import write_json
from ..prior import data as prior_data
from ..prior import train as prior_train
from ..prior.flat_codes import FlatCodes, find_flat_codes, merge_flat_codes
from ..prior.train import TrainConfig
from . import world


@dataclass
class PriorRecipe:
    items: int = 12288  # training images, each seen under every caption template that applies
    held_out: int = 256
    steps: int = 3000
    seed: int = 0
    merge_flat_codes: bool = True  # see vqclip/prior/flat_codes.py
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=32, lr=2e-3, warmup=100, eval_every=250, checkpoint_every=100,
        width=128, heads=4, glu=256, encoder_layers=1, decoder_layers=3, text_length=16, eval_items=256))
    eval_candidates: int = 4  # samples per prompt when grading; the best by CLIP is judged
    eval_prompts: int = 24  # how many of `vqclip shapes eval`'s default prompts grade the samples
    # Sampling settings recommended in prior.json (used by init.mode=prior and `vqclip prior sample`):
    # a sweep on the trained prior found a short top-k and a lower temperature draw cleaner shapes.
    sample: dict = field(default_factory=lambda: {"supercondition": 2.0, "top_k": 16, "temperature": 0.7})


def vqgan_info(vqgan) -> dict:
    return {"name": "shapes", "codebook_size": int(vqgan.n_embed), "factor": int(vqgan.factor)}


def world_batches(items: list[tuple], batch_size: int = 64):
    """`batches(start)` for prior_data.build_data over (scene, caption) pairs, drawn on the fly."""
    def batches(start: int):
        for first in range(start, len(items), batch_size):
            chunk = items[first:first + batch_size]
            images = torch.stack([world.to_tensor(world.draw(scene)) for scene, _ in chunk])
            yield images, [caption for _, caption in chunk]

    return batches


def world_items(count: int, seed: int, split: str) -> list[tuple]:
    return list(itertools.islice(world.captioned_scenes(world.make_rng(seed, split)), count))


def build_world_data(out: Path, vqgan, count: int, seed: int, split: str, *, resume: bool, progress: bool):
    """Encode the first `count` (scene, caption) items of a split into `out` (resumable)."""
    sources = [f"shapes/{split}/{seed}/{i}" for i in range(count)]
    if out.exists():
        stored = prior_data.load_data(out)
        if stored.sources == sources:
            return stored
    return prior_data.build_data(world_batches(world_items(count, seed, split)), sources, vqgan, vqgan_info(vqgan),
                                 out, resume=resume or out.exists(), progress=progress)


def every_caption(data: prior_data.PriorData, seed: int, split: str) -> prior_data.PriorData:
    """One row per (image, applicable caption template): ~6 captions per encoded image, at no encoding cost.

    Why: encoding is the slow part of the recipe; the prior learns the words better when each
    image is seen under every phrasing than under the one caption drawn for it."""
    items = world_items(len(data.captions), seed, split)
    index, captions = [], []
    for i, (scene, _) in enumerate(items):
        for text in world.all_captions(scene):
            index.append(i)
            captions.append(text)
    return prior_data.PriorData(data.image_tokens[index], captions, prior_data.bpe_tensor(captions), data.vqgan,
                                [data.sources[i] for i in index])


def with_merged_codes(data: prior_data.PriorData, flat: FlatCodes) -> prior_data.PriorData:
    tokens = merge_flat_codes(data.image_tokens, flat).to(data.image_tokens.dtype)
    return prior_data.PriorData(tokens, data.captions, data.text_bpe, data.vqgan, data.sources)


def train(out: str | Path, recipe: PriorRecipe, *, vqgan, clip=None, resume: bool = False,
                progress: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_world_data(out / "data.pt", vqgan, recipe.items, recipe.seed, "train",
                            resume=resume, progress=progress)
    held = build_world_data(out / "held-out.pt", vqgan, recipe.held_out, recipe.seed, "held-out",
                            resume=resume, progress=progress)
    recipe.train.steps, recipe.train.seed = recipe.steps, recipe.seed
    data = every_caption(data, recipe.seed, "train")
    if recipe.merge_flat_codes:
        flat = find_flat_codes(vqgan)
        data, held = with_merged_codes(data, flat), with_merged_codes(held, flat)
    metrics = prior_train.train(data, out, recipe.train, held_out=held, resume=resume, progress=progress,
                    info={"recipe": "vqclip shapes train prior", "sample": recipe.sample})
    if clip is not None:
        metrics["samples"] = grade_samples(out, vqgan, clip, recipe.eval_candidates, recipe.seed,
                                           recipe.eval_prompts)
    write_json(out / "prior-metrics.json", metrics)
    return metrics


def grade_samples(folder: Path, vqgan, clip, candidates: int, seed: int, prompts: int = 24) -> dict:
    """The prior alone: one image per default eval prompt (best of `candidates` by CLIP), judged."""
    from ..prior.sample import sample_images, settings_for
    from ..prior.weights import load_prior
    from . import evaluate, judge

    prior = load_prior(folder)
    rows = []
    for index, prompt in enumerate(evaluate.default_prompts()[:prompts]):
        settings = settings_for(prior, count=candidates, seed=seed + index)
        result = sample_images(prior, vqgan, prompt, settings, clip=clip)
        verdict = judge.judge(result.images[0])
        scores = judge.score_against(verdict, world.parse_caption(prompt))
        rows.append({"prompt": prompt, **{f"{k}_ok": v for k, v in scores.items()}})
    return {key: round(sum(bool(r[f"{key}_ok"]) for r in rows) / len(rows), 4)
            for key in ("colour", "shape", "background")} | {"prompts": len(rows), "candidates": candidates}
