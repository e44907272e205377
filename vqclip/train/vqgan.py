"""`vqclip train vqgan DATA --out DIR`: a taming-format VQGAN trained on any captioned folder.

From scratch (the architecture set by `ch`, `ch_mult`, `num_res_blocks`, `n_embed`, `embed_dim`,
...) or fine-tuned from a VQGAN users have (`--from imagenet_f16_16384`, a folder with vqgan.yaml
+ vqgan.safetensors, or a taming YAML with its checkpoint beside it): the architecture and the
codebook size are kept. Each step: (1) a batch of images (random crops if `crop` is set);
(2) L1 + MSE reconstruction and the two VQ-VAE codebook terms (codebook, `beta` × commitment);
(3) from `disc_start` on, taming's patch discriminator (NLayerDiscriminator) with the hinge loss,
its generator term weighted adaptively as in taming's VQLPIPSWithDiscriminator (the ratio of the
reconstruction's and the adversarial term's gradient norms at the decoder's last layer), since
reconstruction losses alone give blurry images; (4) codes unused for `restart_every` steps are
moved onto random encoder outputs. LPIPS, taming's perceptual term, is left out: it needs VGG
weights that vqclip cannot fetch. Every `sample_every` steps a grid of held-out images over their
reconstructions goes to DIR/samples/; the result is DIR/vqgan.yaml + DIR/vqgan.safetensors.
"""

from __future__ import annotations

import functools
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from ..atomic import atomic_open, atomic_write_text
from ..errors import UserError
from ..machine.precision import training_autocast
from ..models.vqgan import VQ, build_vqgan, read_taming_config, taming_state_dict
from ..outputs import write_json
from . import distributed, loop
from .common import check_positive, random_crops, save_grid, training_data, world_named
from .loop import TrainState, warmup_cosine


@dataclass
class VQGANTrainConfig:
    steps: int = 2000
    batch_size: int = 16
    size: int = 32  # images are brought to size × size (shorter side resized, centre cut out)
    crop: int = 0  # train on random crops of this side (0: whole images)
    lr: float = 1e-3  # from scratch; fine-tuning a large VQGAN wants about 1e-5
    warmup: int = 50
    beta: float = 0.25  # commitment weight
    restart_every: int = 100  # restart codes unused over this many steps (0: never)
    disc_start: int = 500  # the discriminator joins at this step (-1: never)
    disc_weight: float = 0.8  # times taming's adaptive weight
    disc_layers: int = 2
    disc_ch: int = 32
    sample_every: int = 250
    checkpoint_every: int = 100
    held_out: int = 64  # images kept out of training for the figures (without --held-out)
    seed: int = 0
    bf16: bool = True  # autocast where bf16 is fast (vqclip.machine.precision decides)
    base: str = ""  # fine-tune this VQGAN (a name, a folder or a taming YAML); "" = from scratch
    # the architecture from scratch (taming's ddconfig; ch: a multiple of 32, taming's GroupNorm groups)
    n_embed: int = 512
    embed_dim: int = 64
    ch: int = 64
    ch_mult: list = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    z_channels: int = 64
    attn_resolutions: list = field(default_factory=list)


def scratch_spec(config: VQGANTrainConfig) -> dict:
    return {"kind": VQ, "n_embed": config.n_embed, "embed_dim": config.embed_dim, "ddconfig": dict(
        double_z=False, z_channels=config.z_channels, resolution=config.size, in_channels=3, out_ch=3,
        ch=config.ch, ch_mult=list(config.ch_mult), num_res_blocks=config.num_res_blocks,
        attn_resolutions=list(config.attn_resolutions), dropout=0.0)}


def base_files(base: str) -> tuple[Path, Path]:
    """(taming YAML, checkpoint) of `--from`: a registry name, a folder from this recipe, or a YAML."""
    from ..models.registry import VQGANS, fetch_vqgan

    if base in VQGANS:
        config, checkpoint = fetch_vqgan(base)
        if config is None:
            raise UserError(f"{base} has no encoder to fine-tune (min-dalle's detokenizer): choose a taming VQGAN")
        return config, checkpoint
    path = Path(base)
    if path.is_dir():
        return path / "vqgan.yaml", path / "vqgan.safetensors"
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        for suffix in (".safetensors", ".ckpt", ".pt", ".pth"):
            if path.with_suffix(suffix).is_file():
                return path, path.with_suffix(suffix)
        raise UserError(f"--from {base}: no checkpoint beside it ({path.stem}.safetensors or {path.stem}.ckpt)")
    raise UserError(f"--from {base!r} is neither a VQGAN name ({', '.join(VQGANS)}), a folder with vqgan.yaml, "
                    "nor a taming YAML")


def build_model(config: VQGANTrainConfig) -> tuple[torch.nn.Module, dict]:
    """(trainable VQGAN, its spec): random weights from scratch, or the `base` VQGAN's weights."""
    from ..models.vqgan import load_vqgan

    if not config.base:
        if config.ch % 32:
            raise UserError(f"ch={config.ch} must be a multiple of 32 (taming's GroupNorm has 32 groups)")
        spec = scratch_spec(config)
    else:
        yaml_path, checkpoint = base_files(config.base)
        spec = read_taming_config(yaml_path)
        if spec["kind"] != VQ:
            raise UserError(f"--from {config.base}: only VQ VQGANs can be fine-tuned here, not {spec['kind']}")
    factor = 2 ** (len(spec["ddconfig"]["ch_mult"]) - 1)
    for name in ("size", "crop"):
        if getattr(config, name) % factor:
            raise UserError(f"{name}={getattr(config, name)} must be a multiple of the VQGAN's factor {factor}")
    if config.crop > config.size:
        raise UserError(f"crop={config.crop} must not exceed size={config.size}")
    if not config.base:
        return build_vqgan(spec), spec
    model = load_vqgan(yaml_path, checkpoint)
    return model.requires_grad_(True), {k: spec[k] for k in ("kind", "n_embed", "embed_dim", "ddconfig")}


def build_discriminator(config: VQGANTrainConfig) -> torch.nn.Module:
    from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

    return NLayerDiscriminator(input_nc=3, ndf=config.disc_ch, n_layers=config.disc_layers).apply(weights_init)


def vq_losses(model, images: torch.Tensor, beta: float):
    """(reconstruction loss, codebook, commitment, tokens, reconstructions) for a batch in [0, 1]."""
    z = model.encode(images).float()
    tokens = model.z_to_tokens(z)
    z_q = model.tokens_to_z(tokens)
    codebook = F.mse_loss(z_q, z.detach())
    commitment = beta * F.mse_loss(z, z_q.detach())
    reconstruction = model.decode(model.quantize(z)).float()
    recon = F.l1_loss(reconstruction, images) + F.mse_loss(reconstruction, images)
    return recon, codebook, commitment, tokens, reconstruction


def adaptive_weight(recon: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor,
                    average=lambda grad: grad) -> torch.Tensor:
    """taming's balance: |∇ recon| / |∇ adversarial| at the decoder's last layer, clamped to [0, 1e4]
    (`average`: of a rank's share's gradients over the ranks, the global batch's)."""
    recon_grad = average(torch.autograd.grad(recon, last_layer, retain_graph=True)[0])
    adversarial_grad = average(torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0])
    return (recon_grad.norm() / (adversarial_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def restart_dead_codes(model, usage: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator) -> int:
    """Move codes never chosen since the last restart onto random encoder outputs."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    picks = torch.randint(len(candidates), (len(dead),), generator=generator)
    with torch.no_grad():
        model.codebook[dead] = candidates[picks].to(model.codebook.device, model.codebook.dtype)
    return len(dead)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, device: torch.device, batch_size: int = 64) -> dict:
    """PSNR of the reconstructions (dB, averaged over images) and how many codes they use."""
    psnr, used = [], set()
    for first in range(0, len(images), batch_size):
        batch = images[first:first + batch_size].to(device)
        tokens = model.z_to_tokens(model.encode(batch))
        reconstruction = model.decode(model.tokens_to_z(tokens)).float()
        mse = F.mse_loss(reconstruction, batch, reduction="none").mean((1, 2, 3))
        psnr += (10 * torch.log10(1 / mse.clamp_min(1e-10))).tolist()
        used |= set(tokens.unique().tolist())
    return {"psnr_db": round(sum(psnr) / len(psnr), 2), "codebook_used": len(used),
            "codebook_size": int(model.n_embed)}


def train(data: str | Path, out: str | Path, config: VQGANTrainConfig, *, held_out: str | Path | None = None,
          template: str | None = None, resume: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train; checkpoint to OUT/train_state.pt; write OUT/vqgan.{yaml,safetensors} and OUT/vqgan-metrics.json.

    DATA is a folder or list of captioned images, or a world drawn on the fly (`shapes`)."""
    check_positive(config, ("steps", "batch_size", "size", "sample_every", "checkpoint_every"))
    ranks, device = distributed.start(device, config.batch_size)
    progress = progress and ranks.main
    world = world_named(data, held_out, template)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = world.make_rng(config.seed) if world else random.Random(config.seed)
    model, spec = build_model(config)  # before the data is read: a wrong setting is told at once
    if world:
        held, report = world.held_out_images(config.held_out), {"data": world.NAME}

        def draw() -> torch.Tensor:
            return world.image_batch(rng, config.batch_size)
    else:
        train_set, held, report = training_data(data, config.size, held_out=held_out,
                                                held_out_count=config.held_out, template=template, progress=progress)
        held = held.floats()

        def draw() -> torch.Tensor:
            return train_set.floats(torch.randint(len(train_set), (config.batch_size,), generator=generator))

    metrics = fit(model, spec, draw, held, Path(out), config, rng=rng, generator=generator, resume=resume,
                  device=device, progress=progress)
    if world and ranks.main:
        metrics.update(world.vqgan_figures(model.cpu(), config.held_out))
    metrics.update(report)
    if ranks.main:
        write_json(Path(out) / "vqgan-metrics.json", metrics)
    return metrics


def fit(model, spec: dict, draw, held: torch.Tensor, out: Path, config: VQGANTrainConfig, *, rng,
        generator: torch.Generator, resume: bool, device: torch.device, progress: bool) -> dict:
    """The loop over the batches `draw()` returns (images in [0, 1]); `rng` and `generator` are the
    streams they are drawn from, saved with every state. Writes OUT/vqgan.{yaml,safetensors}; returns
    the held-out figures and the history. Under torchrun each rank trains on its share of every
    batch (vqclip/train/distributed.py); rank 0 writes."""
    ranks, device = distributed.start(device, config.batch_size)
    discriminator = build_discriminator(config)
    discriminator = distributed.global_batch_norms(discriminator, ranks).to(device).train()
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.9))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup, config.steps))
    usage = torch.zeros(model.n_embed, dtype=torch.long)
    state = TrainState(out / "train_state.pt", model, optimizer, schedule, rng, generator,
                       extra=lambda: {"usage": usage, "discriminator": discriminator.state_dict(),
                                      "d_optimizer": d_optimizer.state_dict()})
    if resume and state.path.is_file():
        stored = state.resume(asdict(config))
        discriminator.load_state_dict(stored["discriminator"])
        d_optimizer.load_state_dict(stored["d_optimizer"])
        usage.copy_(stored["usage"])
    distributed.seed_rank(config.seed, ranks)
    losses = distributed.parallel(model, functools.partial(vq_losses, beta=config.beta), ranks, device)
    judge = distributed.parallel(discriminator, lambda module, images: module(images), ranks, device)

    def step(index: int) -> dict:
        images = random_crops(draw(), config.crop, generator).to(device)
        recon, tokens = train_step(model, losses, judge, optimizer, d_optimizer, distributed.shard(images, ranks),
                                   config, adversarial=0 <= config.disc_start <= index,
                                   average=functools.partial(distributed.mean, ranks=ranks))
        schedule.step()
        usage.add_(distributed.total(torch.bincount(tokens.flatten(), minlength=model.n_embed), ranks).cpu())
        recon = distributed.mean(recon, ranks).item()
        if config.restart_every and (index + 1) % config.restart_every == 0:
            with torch.no_grad():
                candidates = model.encode(images).movedim(1, -1).reshape(-1, model.embed_dim).float()
            restart_dead_codes(model, usage, candidates, generator)
            usage.zero_()
        return {"recon_loss": round(recon, 5)}

    history = loop.fit("vqgan", config, state, step, every=config.sample_every,
                       evaluate=lambda done: watch(model, held, out, done, device), ranks=ranks, device=device,
                       progress=progress)
    model.eval()
    figures = {}
    if ranks.main:
        export(model, spec, out)
        last = history[-1] if history else {}
        # the loop measured the final weights already (its last evaluation is at the last step)
        figures = ({k: last[k] for k in ("psnr_db", "codebook_used", "codebook_size")}
                   if last.get("step") == config.steps else evaluate(model, held, device))
    distributed.barrier(ranks)  # the export is there for whatever the other ranks run next
    return {**figures, "steps": config.steps, "history": history, "config": asdict(config)}


def train_step(model, losses, discriminator, optimizer, d_optimizer, images: torch.Tensor, config: VQGANTrainConfig,
               *, adversarial: bool, average=lambda grad: grad) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of the VQGAN (and, once it has joined, of the discriminator); (reconstruction loss, tokens).

    `losses(images)` is vq_losses on `model` and `discriminator(images)` the discriminator, both
    possibly through DistributedDataParallel; `average` makes a rank's gradient the global batch's."""
    device = images.device
    with training_autocast(device, config.bf16):
        recon, codebook, commitment, tokens, reconstruction = losses(images)
        loss = recon + codebook + commitment
        if adversarial:
            g_loss = -discriminator(2 * reconstruction - 1).float().mean()
            weight = adaptive_weight(recon, g_loss, model.decoder.conv_out.weight, average) * config.disc_weight
            loss = loss + weight * g_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if adversarial:
        with training_autocast(device, config.bf16):
            d_loss = hinge_d_loss(discriminator(2 * images - 1).float(),
                                  discriminator(2 * reconstruction.detach() - 1).float())
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
    return recon.detach(), tokens


def watch(model, held: torch.Tensor, out: Path, step: int, device: torch.device) -> dict:
    """The held-out figures now, and OUT/samples/step-N.png: 8 held-out images over their reconstructions."""
    model.eval()
    shown = held[:8]
    with torch.no_grad():
        again = model.decode(model.quantize(model.encode(shown.to(device))))
    save_grid(out / "samples" / f"step-{step:06d}.png", [shown, again],
              {"recipe": "vqgan", "step": step, "rows": "held-out images, reconstructions"})
    figures = evaluate(model, held, device)
    model.train()
    return figures


def taming_config(spec: dict) -> dict:
    """The YAML users' taming VQGANs come with (lossconfig omitted: vqclip never builds it)."""
    return {"model": {"target": "taming.models.vqgan.VQModel",
                      "params": {"embed_dim": spec["embed_dim"], "n_embed": spec["n_embed"],
                                 "ddconfig": spec["ddconfig"]}}}


def export(model, spec: dict, out: Path) -> None:
    """OUT/vqgan.yaml + OUT/vqgan.safetensors (taming's key names, fp16: half the size, loaded as fp32)."""
    from safetensors.torch import save

    atomic_write_text(out / "vqgan.yaml", yaml.safe_dump(taming_config(spec), sort_keys=False))
    with atomic_open(out / "vqgan.safetensors") as f:
        f.write(save({k: v.detach().cpu().half().contiguous() for k, v in taming_state_dict(model).items()}))
