"""Recipe: a tiny taming-format VQGAN for the shapes world, trained on the CPU in minutes.

Reconstruction (L1 + MSE) and the two VQ-VAE codebook terms, no perceptual loss (LPIPS needs VGG
weights that cannot be had). Codes unused for a while are restarted on encoder outputs, so most
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
from tqdm.auto import trange

from ..models.vqgan import build_vqgan
from ..outputs import write_json
from ..precision import training_autocast
from ..train import vqgan as general_vqgan
from ..train.common import random_crops
from ..training import load_checkpoint, save_checkpoint, warmup_cosine
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


def train(out: Path, recipe: VQGANRecipe, *, resume: bool = False, progress: bool = True) -> dict:
    """Train, checkpointing to out/train_state.pt; write out/vqgan.yaml + out/vqgan.safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    rng = world.make_rng(recipe.seed)
    model = build_vqgan({"kind": "vq", "ddconfig": recipe.ddconfig, "n_embed": recipe.n_embed,
                         "embed_dim": recipe.embed_dim})
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(recipe.warmup, recipe.steps))
    usage = torch.zeros(recipe.n_embed, dtype=torch.long)
    start = 0
    state_path = out / "train_state.pt"
    if resume and state_path.exists():
        state = load_checkpoint(state_path, model, optimizer, schedule, rng, generator)
        usage, start = state["usage"], state["step"]
    bar = trange(start, recipe.steps, disable=not progress, desc="vqgan", unit="step")
    for step in bar:
        images = random_crops(world.batch(rng, recipe.batch_size)[0], recipe.crop, generator)
        with training_autocast(torch.device("cpu"), recipe.bf16):
            recon, codebook, commitment, tokens, _ = general_vqgan.vq_losses(model, images, recipe.beta)
        loss = recon + codebook + commitment
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        usage += torch.bincount(tokens.flatten(), minlength=recipe.n_embed)
        if (step + 1) % recipe.restart_every == 0:
            with torch.no_grad():
                candidates = model.encode(images).movedim(1, -1).reshape(-1, recipe.embed_dim).float()
            general_vqgan.restart_dead_codes(model, usage, candidates, generator)
            usage.zero_()
        bar.set_postfix(recon=f"{recon.item():.4f}", refresh=False)
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.steps:
            save_checkpoint(state_path, step + 1, model, optimizer, schedule, rng, generator, usage=usage)
    model.eval()
    export(model, recipe, out)
    metrics = evaluate(model, recipe.eval_images)
    write_json(out / "vqgan-metrics.json", {**metrics, "recipe": asdict(recipe)})
    return metrics


def export(model, recipe: VQGANRecipe, out: Path) -> None:
    general_vqgan.export(model, {"kind": "vq", "ddconfig": recipe.ddconfig, "n_embed": recipe.n_embed,
                                 "embed_dim": recipe.embed_dim}, out)
