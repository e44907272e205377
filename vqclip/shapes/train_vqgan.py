"""Recipe: a tiny taming-format VQGAN for the shapes world, trained on the CPU in minutes.

The general recipe's loop (vqclip/train/vqgan.py) on batches drawn from the world, without its
discriminator: reconstruction (L1 + MSE) and the two VQ-VAE codebook terms, no perceptual loss
(LPIPS needs VGG weights that cannot be had). Codes unused for a while are restarted on encoder outputs, so most
of the codebook stays in use. The result is written in the taming layout users have (a YAML and
a state dict with taming's key names) and loads through the same loader as their VQGANs.

Pitfall measured on a prototype: taming normalises with GroupNorm(32 groups), so with ch below
64 a group holds one channel or none and flat colours are normalised away; ch 64 with fewer
blocks trains, where ch 32 stalled at 11–12 dB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.vqgan import build_vqgan
from ..outputs import write_json
from ..train import vqgan as general_vqgan
from . import judge, world


@dataclass
class VQGANRecipe:
    steps: int = 3000
    batch_size: int = 16
    crop: int = 32  # train on random crops: a quarter of the pixels, the same local statistics
    lr: float = 1e-3
    warmup: int = 50
    beta: float = 0.25  # commitment weight
    n_embed: int = 512
    embed_dim: int = 64
    restart_every: int = 100  # restart codes unused over this many steps
    sample_every: int = 500  # held-out figures and a grid of reconstructions in out/samples/
    checkpoint_every: int = 100
    eval_images: int = 256  # held-out images for the final figures
    seed: int = 0
    bf16: bool = True  # autocast where bf16 is fast (vqclip.precision.fast_bf16: CPUs with bf16 matrix units)
    ddconfig: dict = field(default_factory=lambda: dict(
        double_z=False, z_channels=64, resolution=64, in_channels=3, out_ch=3, ch=64, ch_mult=[1, 2, 2],
        num_res_blocks=1, attn_resolutions=[], dropout=0.0))


def evaluate(model, count: int = 256) -> dict:
    """Held-out PSNR, codebook use and how often the pixel judge agrees with the captions."""
    samples = world.held_out(count)
    images = torch.stack([world.to_tensor(image) for image, _, _ in samples])
    with torch.no_grad():
        z = model.encode(images)
        tokens = model.z_to_tokens(z)
        reconstruction = model.decode(model.tokens_to_z(tokens)).clamp(0, 1)
    mse = F.mse_loss(reconstruction, images, reduction="none").mean((1, 2, 3))
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()
    agree = [all(v is not False for v in judge.score_against(judge.judge(r), scene_dict(scene)).values())
             for r, (_, _, scene) in zip(reconstruction, samples)]
    return {"psnr_db": round(psnr, 2), "codebook_used": int(tokens.unique().numel()),
            "codebook_size": model.n_embed, "judge_agreement": round(sum(agree) / len(agree), 4),
            "images": count}


def scene_dict(scene) -> dict:
    return {"colour": scene.colour, "shape": scene.shape, "background": scene.background}


def general_config(recipe: VQGANRecipe) -> general_vqgan.VQGANTrainConfig:
    """The general recipe's settings for this one: the same loop, without the discriminator."""
    ddconfig = recipe.ddconfig
    return general_vqgan.VQGANTrainConfig(
        steps=recipe.steps, batch_size=recipe.batch_size, size=ddconfig["resolution"], crop=recipe.crop, lr=recipe.lr,
        warmup=recipe.warmup, beta=recipe.beta, restart_every=recipe.restart_every, disc_start=-1,
        sample_every=recipe.sample_every, checkpoint_every=recipe.checkpoint_every, seed=recipe.seed,
        bf16=recipe.bf16, n_embed=recipe.n_embed, embed_dim=recipe.embed_dim, ch=ddconfig["ch"],
        ch_mult=list(ddconfig["ch_mult"]), num_res_blocks=ddconfig["num_res_blocks"],
        z_channels=ddconfig["z_channels"], attn_resolutions=list(ddconfig["attn_resolutions"]))


def train(out: Path, recipe: VQGANRecipe, *, resume: bool = False, progress: bool = True) -> dict:
    """vqclip.train.vqgan's loop on batches drawn from the world; writes out/vqgan.{yaml,safetensors},
    out/samples/ and out/vqgan-metrics.json (with the pixel judge's figures)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    rng = world.make_rng(recipe.seed)
    spec = {"kind": "vq", "ddconfig": recipe.ddconfig, "n_embed": recipe.n_embed, "embed_dim": recipe.embed_dim}
    model = build_vqgan(spec)
    held = torch.stack([world.to_tensor(image) for image, _, _ in world.held_out(recipe.eval_images)])
    history = general_vqgan.fit(model, spec, lambda: world.batch(rng, recipe.batch_size)[0], held, out,
                                general_config(recipe), rng=rng, generator=generator, resume=resume,
                                device=torch.device("cpu"), progress=progress)["history"]
    metrics = evaluate(model, recipe.eval_images)
    write_json(out / "vqgan-metrics.json", {**metrics, "history": history, "recipe": asdict(recipe)})
    return metrics

