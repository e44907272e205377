"""`vqclip train prior DATA --vqgan V --out DIR`: encode captioned images and train a BART prior.

(1) The images, brought to `size`, are encoded with the VQGAN into DIR/data.pt and the held-out ones
into DIR/held-out.pt (kept: a rerun or `--resume` encodes nothing again); a world (`shapes`) draws
its images instead. With `merge_flat_codes` the VQGAN's interchangeable flat codes are merged
(vqclip/prior/flat_codes.py). (2) The loop: sample a batch of (caption, token grid); blank a
fraction of the captions, so that the empty caption learns the unconditional distribution that
superconditioning subtracts; cross-entropy of every image token given the text and the tokens
before it; clip the gradient norm, AdamW step (the model's own parameter groups), warm-up + cosine
learning rate. (3) At each held-out evaluation (`eval_every`) the held-out loss, and a grid of
samples for four held-out captions in DIR/samples/step-NNNNNN.png. The result is DIR/prior.json +
DIR/prior.safetensors, usable as `init.prior=DIR`.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..machine.precision import training_autocast
from ..outputs import write_json
from ..prior import data as prior_data
from ..prior.model import BartPrior, PriorConfig
from ..prior.tokenizer import ClipBpeTokenizer, pad_rows
from ..prior.weights import LoadedPrior, save_prior
from . import distributed, loop
from .common import check_positive, open_vqgan, save_grid, training_data, world_named
from .loop import TrainState, warmup_cosine

SAMPLE = {"supercondition": 2.0, "top_k": 16, "temperature": 0.7}  # recommended in prior.json (a sweep on shapes)


@dataclass
class PriorTrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    blank_fraction: float = 0.1  # captions replaced by "" (the unconditional branch)
    eval_every: int = 250
    eval_items: int = 256  # held out from the data when no held-out data is given
    checkpoint_every: int = 100
    seed: int = 0
    bf16: bool = True  # autocast where bf16 is fast (vqclip.machine.precision.fast_bf16 decides)
    merge_flat_codes: bool = False  # one token for each set of interchangeable flat codes
    world_images: int = 12288  # DATA=shapes: drawings to encode (each under every caption that applies)
    world_prompts: int = 24  # DATA=shapes: prompts whose samples the pixel judge grades at the end (0: none)
    # the model
    width: int = 128
    heads: int = 4
    glu: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 4
    text_length: int = 24
    prune_vocab: bool = True  # keep only the BPE ids the captions use (see tokenizer.py)


def check(config: PriorTrainConfig) -> None:
    """The settings' types are checked as they are read; these are the values no type rules out."""
    check_positive(config, ("steps", "batch_size", "width", "heads", "glu", "decoder_layers", "encoder_layers",
                            "text_length", "eval_every", "checkpoint_every", "eval_items"))
    if config.width % config.heads:
        raise UserError(f"width {config.width} must be a multiple of heads {config.heads}")
    if not 0 < config.lr < 1 or not 0 <= config.blank_fraction < 1:
        raise UserError("lr must be in (0, 1) and blank_fraction in [0, 1)")


def encode(images, vqgan, description: dict, out: Path, *, resume: bool, progress: bool) -> prior_data.PriorData:
    """`images` (an ImageSet) as VQGAN tokens in `out`, reused when it holds the same images."""
    if out.exists():
        stored = prior_data.load_data(out)
        if stored.sources == images.sources and stored.vqgan == description:
            return stored

    def batches(start: int, batch_size: int = 64):
        for first in range(start, len(images), batch_size):
            yield images.floats(slice(first, first + batch_size)), images.captions[first:first + batch_size]

    return prior_data.build_data(batches, images.sources, vqgan, description, out, resume=resume or out.exists(),
                                 progress=progress)


def train(data: str | Path, out: str | Path, config: PriorTrainConfig, *, vqgan: str | None = None,
          size: int | None = None, held_out: str | Path | None = None, template: str | None = None,
          resume: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Encode, train, sample; returns the metrics (also OUT/prior-metrics.json)."""
    check(config)
    from ..prior.flat_codes import find_flat_codes, merge_flat_codes

    world = world_named(data, held_out, template)
    vqgan = vqgan or (world.NAME if world else None)
    if not vqgan:
        raise UserError("train prior needs --vqgan (a folder from vqclip train vqgan, or a VQGAN name)")
    ranks, device = distributed.start(device, config.batch_size)
    progress = progress and ranks.main
    model = open_vqgan(vqgan, device)
    out, size = Path(out), size or model.trained_size or 256  # the side the VQGAN was trained at
    if size % model.factor:
        raise UserError(f"size={size} is not a multiple of the VQGAN's factor {model.factor}")
    description = {"vqgan": str(vqgan), "size": size, "codebook_size": int(model.n_embed), "factor": int(model.factor)}
    with distributed.main_first(ranks):  # rank 0 encodes; the others find its files
        if world:
            tokens, held_tokens = world.prior_data(out, model, description, config, resume=resume, progress=progress)
            report = {"data": world.NAME}
        else:
            train_set, held, report = training_data(data, size, held_out=held_out, held_out_count=config.eval_items,
                                                    template=template, progress=progress)
            tokens = encode(train_set, model, description, out / "data.pt", resume=resume, progress=progress)
            held_tokens = encode(held, model, description, out / "held-out.pt", resume=resume, progress=progress)
    if config.merge_flat_codes:
        flat = find_flat_codes(model)
        tokens, held_tokens = (prior_data.PriorData(merge_flat_codes(d.image_tokens, flat).to(d.image_tokens.dtype),
                                                    d.captions, d.text_bpe, d.vqgan, d.sources)
                               for d in (tokens, held_tokens))
    captions = sorted(set(held_tokens.captions))[:4]

    def samples(step: int, prior, tokenizer) -> None:
        grid = sample_grid(LoadedPrior(prior, tokenizer, {"sample": SAMPLE}), model, captions, config.seed)
        save_grid(out / "samples" / f"step-{step:06d}.png", grid, {"recipe": "prior", "step": step, "rows": captions})

    metrics = fit(tokens, out, config, held_out=held_tokens, resume=resume, progress=progress, device=device,
                  info={"recipe": "vqclip train prior", "sample": SAMPLE}, on_eval=samples)
    metrics.update(report)
    if world and config.world_prompts and ranks.main:
        metrics["samples"] = world.prior_figures(out, model, shipped_clip(world.NAME), seed=config.seed,
                                                 prompts=config.world_prompts)
    if ranks.main:
        write_json(out / "prior-metrics.json", metrics)
    return metrics


def shipped_clip(name: str):
    """The CLIP shipped with a world: it ranks the prior's samples before they are judged."""
    from ..models.clip import load_clip_ensemble
    from ..models.registry import resolve_clip

    return load_clip_ensemble([resolve_clip({"name": name, "weight": 1.0})])


def too_few_to_hold_out(items: int, eval_items: int) -> str:
    most = (items - 1) // 2  # the held-out part must stay under half of the data
    fix = f"set eval_items={most} or lower, or pass" if most >= 1 else "pass"
    return (f"{items} training items are too few to hold out eval_items={eval_items} (under half of them "
            f"can be held out): {fix} held-out data with --held-out")


def text_rows(tokenizer, data: prior_data.PriorData, length: int) -> torch.Tensor:
    return pad_rows([tokenizer.ids(row) for row in data.bpe_rows(slice(None))], length, tokenizer.pad)


def make_model(config: PriorTrainConfig, data: prior_data.PriorData, tokenizer) -> BartPrior:
    rows, columns = data.image_tokens.shape[1:]
    codebook = int(data.vqgan["codebook_size"])
    return BartPrior(PriorConfig(
        text_vocab=tokenizer.vocab_size, text_length=config.text_length, image_vocab=codebook,
        codebook_size=codebook, grid=[int(rows), int(columns)], width=config.width, heads=config.heads,
        glu=config.glu, encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        pad_token=tokenizer.pad))


@torch.no_grad()
def held_out_loss(model: BartPrior, text: torch.Tensor, images: torch.Tensor, device, bf16: bool,
                  batch_size: int = 64) -> float:
    total = 0.0
    for first in range(0, len(images), batch_size):
        t, i = text[first:first + batch_size].to(device), images[first:first + batch_size].to(device)
        with training_autocast(device, bf16):
            total += model.loss(t, i).item() * len(i)
    return total / len(images)


def fit(data: prior_data.PriorData, out: str | Path, config: PriorTrainConfig, *,
        held_out: prior_data.PriorData | None = None, resume: bool = False, progress: bool = True,
        device: str | torch.device = "cpu", info: dict | None = None,
        on_eval=lambda step, model, tokenizer: None) -> dict:
    """Train on token data and write OUT/prior.{json,safetensors}; returns the metrics.

    `on_eval(step, model, tokenizer)` is called after each held-out evaluation (with the model in
    eval mode), e.g. to draw samples; it must not draw from the training's random streams. Under
    torchrun each rank trains on its share of every batch (vqclip/train/distributed.py); rank 0
    evaluates and writes."""
    check(config)
    (ranks, device), out = distributed.start(device, config.batch_size), Path(out)
    progress = progress and ranks.main
    if held_out is None:
        if len(data.captions) <= 2 * config.eval_items:
            raise UserError(too_few_to_hold_out(len(data.captions), config.eval_items))
        split = len(data.captions) - config.eval_items
        held_out = prior_data.PriorData(data.image_tokens[split:], data.captions[split:], data.text_bpe[split:],
                                        data.vqgan, data.sources[split:])
        data = prior_data.PriorData(data.image_tokens[:split], data.captions[:split], data.text_bpe[:split],
                                    data.vqgan, data.sources[:split])
    kept = sorted({t for row in data.bpe_rows(slice(None)) for t in row}) if config.prune_vocab else None
    tokenizer = ClipBpeTokenizer(kept)
    text, images = text_rows(tokenizer, data, config.text_length), data.image_tokens.long()
    eval_text, eval_images = text_rows(tokenizer, held_out, config.text_length), held_out.image_tokens.long()
    blank = pad_rows([tokenizer.ids([])], config.text_length, tokenizer.pad)[0]

    torch.manual_seed(config.seed)
    model = make_model(config, data, tokenizer).to(device).train()
    optimizer = torch.optim.AdamW(model.parameter_groups(config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup, config.steps))
    rng, generator = random.Random(config.seed), torch.Generator().manual_seed(config.seed)
    state = TrainState(out / "train_state.pt", model, optimizer, schedule, rng, generator, settings_key="train")
    if resume and state.path.is_file():
        state.resume(asdict(config))
    start = state.step
    distributed.seed_rank(config.seed, ranks)
    step_loss = distributed.parallel(model, BartPrior.loss, ranks, device)
    tokens_per_step = config.batch_size * images[0].numel()
    timing = {"seconds": 0.0}

    def step(index: int) -> dict:
        began = time.perf_counter()
        chosen = torch.randint(len(images), (config.batch_size,), generator=generator)
        batch_text = text[chosen].clone()
        batch_text[torch.rand(config.batch_size, generator=generator) < config.blank_fraction] = blank
        with training_autocast(device, config.bf16):
            loss = step_loss(distributed.shard(batch_text, ranks).to(device),
                             distributed.shard(images[chosen], ranks).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        timing["seconds"] += time.perf_counter() - began
        loss = distributed.mean(loss.detach(), ranks)
        if not torch.isfinite(loss):
            raise UserError(f"the training loss became {loss.item()} at step {index}: lower lr")
        return {"train_loss": round(loss.item(), 4)}

    def evaluate(done: int) -> dict:
        figures = {"held_out_loss": round(held_out_loss(model, eval_text, eval_images, device, config.bf16), 4)}
        on_eval(done, model, tokenizer)
        return figures

    history = loop.fit("prior", config, state, step, every=config.eval_every, evaluate=evaluate, ranks=ranks,
                       device=device, progress=progress)
    model.eval()
    seconds = timing["seconds"]
    metrics = {"steps": config.steps, "held_out_loss": history[-1]["held_out_loss"] if history else None,
               "history": history, "parameters": sum(p.numel() for p in model.parameters()),
               "tokens_per_second": round(tokens_per_step * (config.steps - start) / seconds) if seconds else None,
               "train_seconds_this_run": round(seconds, 1), "train": asdict(config)}
    if ranks.main:
        save_prior(out, model, tokenizer, {"vqgan": data.vqgan, **(info or {})})
        write_json(out / "prior-metrics.json", metrics)
    distributed.barrier(ranks)  # the prior is there for whatever the other ranks run next
    return metrics


@torch.no_grad()
def sample_grid(prior, vqgan, captions: list[str], seed: int, count: int = 6) -> list[torch.Tensor]:
    """A row of `count` samples (the prior alone, no CLIP) per caption."""
    from ..prior.sample import sample_images, settings_for

    return [sample_images(prior, vqgan, caption, settings_for(prior, count=count, seed=seed + index)).images
            for index, caption in enumerate(captions)]
