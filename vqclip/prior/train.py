"""`vqclip prior train DATA`: fit a BART prior to a data file from `vqclip prior build-data`.

The loop, in order: (1) sample a batch of (caption, token grid); (2) blank a fraction of the
captions, so that the empty caption learns the unconditional distribution that
superconditioning subtracts; (3) cross-entropy of every image token given the text and the
tokens before it, under bf16 autocast where the device has fast bf16; (4) clip the gradient
norm, AdamW step, warm-up + cosine learning rate; (5) every `eval_every` steps the held-out loss,
every `checkpoint_every` steps, and after the step in which Ctrl-C or SIGTERM came, the whole
training state and the settings (atomically: `--resume`
reads the settings from there, continues and ends with the same weights). The result is `prior.json` + `prior.safetensors` in the output folder.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import trange

from .. import distributed
from ..errors import UserError
from ..interrupt import stop_on_signals
from ..outputs import write_json
from ..precision import training_autocast
from ..training import end_of_step, load_checkpoint, save_checkpoint, warmup_cosine
from .data import PriorData
from .model import BartPrior, PriorConfig
from .tokenizer import ClipBpeTokenizer, pad_rows
from .weights import save_prior


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    blank_fraction: float = 0.1  # captions replaced by "" (the unconditional branch)
    eval_every: int = 250
    eval_items: int = 256  # held out from the data when no held-out file is given
    checkpoint_every: int = 100
    seed: int = 0
    bf16: bool = True  # autocast where bf16 is fast (vqclip.precision.fast_bf16 decides)
    # the model
    width: int = 128
    heads: int = 4
    glu: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 4
    text_length: int = 24
    prune_vocab: bool = True  # keep only the BPE ids the captions use (see tokenizer.py)


# What --resume lets differ from the stored run: these change neither the model's sizes, nor the
# data, nor the weights up to the step reached. `steps` may only grow: the cosine is stretched to the
# new end, so from the resume step on the rate is what a run of that many steps has at that step.
CHANGEABLE_ON_RESUME = ("steps", "eval_every", "checkpoint_every")


def stored_config(out: str | Path) -> TrainConfig | None:
    """The settings of the run whose state is in OUT/train_state.pt (None: no state, or one written
    before the settings were stored in it)."""
    path = Path(out) / "train_state.pt"
    if not path.is_file():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("train")
    if stored is None:
        return None
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in stored.items() if k in known})


def check_resumable(stored: TrainConfig, config: TrainConfig, where: Path) -> None:
    """UserError naming the first setting that differs from the stored run's (`steps` may grow)."""
    for key in (f.name for f in fields(TrainConfig)):
        old, new = getattr(stored, key), getattr(config, key)
        if key == "steps" and new < old:
            raise UserError(f"steps={new} is fewer than the {old} that {where} trains toward: --resume can "
                            "only raise steps")
        if key not in CHANGEABLE_ON_RESUME and new != old:
            raise UserError(f"{key}={new} differs from {key}={old} stored in {where}: leave {key} out to "
                            "continue that run, or train into another --out")


def too_few_to_hold_out(items: int, eval_items: int) -> str:
    most = (items - 1) // 2  # the held-out part must stay under half of the data
    fix = f"set eval_items={most} or lower, or pass" if most >= 1 else "pass"
    return (f"{items} training items are too few to hold out eval_items={eval_items} (under half of them "
            f"can be held out): {fix} a held-out data file with --held-out")


def text_rows(tokenizer, data: PriorData, length: int) -> torch.Tensor:
    return pad_rows([tokenizer.ids(row) for row in data.bpe_rows(slice(None))], length, tokenizer.pad)


def make_model(config: TrainConfig, data: PriorData, tokenizer) -> BartPrior:
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
    model.eval()
    total = 0.0
    for first in range(0, len(images), batch_size):
        t, i = text[first:first + batch_size].to(device), images[first:first + batch_size].to(device)
        with training_autocast(device, bf16):
            total += model.loss(t, i).item() * len(i)
    model.train()
    return total / len(images)


def restore(state_path: Path, config: TrainConfig, model, optimizer, schedule, rng, generator) -> tuple[int, list]:
    """Load the training state of `--resume`; (step reached, history)."""
    stored = stored_config(state_path.parent)
    if stored is not None:
        check_resumable(stored, config, state_path)
    try:
        state = load_checkpoint(state_path, model, optimizer, schedule, rng, generator)
    except RuntimeError as exc:  # a checkpoint from before the settings were stored in it, other sizes
        raise UserError(f"{state_path} holds a model of other sizes than width={config.width}, heads="
                        f"{config.heads}, glu={config.glu}, encoder_layers={config.encoder_layers}, "
                        f"decoder_layers={config.decoder_layers}: give the first run's values") from exc
    # The checkpoint does not hold the schedule's function (it is rebuilt from `steps`); once
    # `steps` is raised the next step must take the stretched schedule's rate, not the old one's.
    for group, rate, base in zip(optimizer.param_groups, schedule.lr_lambdas, schedule.base_lrs):
        group["lr"] = base * rate(schedule.last_epoch)
    return int(state["step"]), list(state.get("history", []))


def train(data: PriorData, out: str | Path, config: TrainConfig, *, held_out: PriorData | None = None,
          resume: bool = False, progress: bool = True, device: str | torch.device = "cpu",
          info: dict | None = None, log=print, on_eval=lambda step, model, tokenizer: None) -> dict:
    """Train and write OUT/prior.{json,safetensors}; returns the metrics (also OUT/prior-metrics.json).

    `on_eval(step, model, tokenizer)` is called after each held-out evaluation (with the model in
    eval mode), e.g. to draw samples; it must not draw from the training's random streams. Under
    torchrun each rank trains on its share of every batch (vqclip/distributed.py); rank 0 evaluates
    and writes."""
    (ranks, device), out = distributed.start(device, config.batch_size), Path(out)
    progress = progress and ranks.main
    log = log if ranks.main else lambda line: None
    if held_out is None:
        if len(data.captions) <= 2 * config.eval_items:
            raise UserError(too_few_to_hold_out(len(data.captions), config.eval_items))
        split = len(data.captions) - config.eval_items
        held_out = PriorData(data.image_tokens[split:], data.captions[split:], data.text_bpe[split:],
                             data.vqgan, data.sources[split:])
        data = PriorData(data.image_tokens[:split], data.captions[:split], data.text_bpe[:split],
                         data.vqgan, data.sources[:split])
    kept = sorted({t for row in data.bpe_rows(slice(None)) for t in row}) if config.prune_vocab else None
    tokenizer = ClipBpeTokenizer(kept)
    text, images = text_rows(tokenizer, data, config.text_length), data.image_tokens.long()
    eval_text, eval_images = text_rows(tokenizer, held_out, config.text_length), held_out.image_tokens.long()
    blank = pad_rows([tokenizer.ids([])], config.text_length, tokenizer.pad)[0]

    torch.manual_seed(config.seed)
    model = make_model(config, data, tokenizer).to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup, config.steps))
    rng, generator = random.Random(config.seed), torch.Generator().manual_seed(config.seed)
    state_path, start, history = out / "train_state.pt", 0, []
    if resume and state_path.is_file():
        start, history = restore(state_path, config, model, optimizer, schedule, rng, generator)
    elif resume:
        log(f"no {state_path} yet: starting from step 0")

    distributed.seed_rank(config.seed, ranks)
    step_loss = distributed.parallel(model, BartPrior.loss, ranks, device)
    tokens_per_step = config.batch_size * images[0].numel()
    seconds, loss_value = 0.0, float("nan")
    bar = trange(start, config.steps, disable=not progress, desc="prior", initial=start, total=config.steps)
    with stop_on_signals() as stop:
        for step in bar:
            began = time.perf_counter()
            index = torch.randint(len(images), (config.batch_size,), generator=generator)
            batch_text = text[index].clone()
            blanked = torch.rand(config.batch_size, generator=generator) < config.blank_fraction
            batch_text[blanked] = blank
            with training_autocast(device, config.bf16):
                loss = step_loss(distributed.shard(batch_text, ranks).to(device),
                                 distributed.shard(images[index], ranks).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            seconds += time.perf_counter() - began
            loss = distributed.mean(loss.detach(), ranks)
            loss_value = loss.item()
            if not torch.isfinite(loss):
                raise UserError(f"the training loss became {loss_value} at step {step}: lower --lr")
            done = step + 1
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_step * (done - start) / seconds:.0f}")
            if ranks.main and (done % config.eval_every == 0 or done == config.steps):
                history.append({"step": done, "train_loss": round(loss_value, 4),
                                "held_out_loss": round(held_out_loss(model, eval_text, eval_images, device,
                                                                     config.bf16), 4)})
                log(f"step {done}: train loss {loss_value:.4f}, held-out loss {history[-1]['held_out_loss']:.4f}, "
                    f"{tokens_per_step * (done - start) / seconds:.0f} tokens/s")
                model.eval()
                on_eval(done, model, tokenizer)
                model.train()
            end_of_step(done, config, stop, state_path, lambda: save_checkpoint(
                state_path, done, model, optimizer, schedule, rng, generator, history=history, train=asdict(config)),
                ranks, device)
    bar.close()
    model.eval()
    metrics = {"steps": config.steps, "held_out_loss": history[-1]["held_out_loss"] if history else None,
               "history": history, "parameters": sum(p.numel() for p in model.parameters()),
               "tokens_per_second": round(tokens_per_step * (config.steps - start) / seconds) if seconds else None,
               "train_seconds_this_run": round(seconds, 1), "train": asdict(config)}
    if ranks.main:
        save_prior(out, model, tokenizer, {"vqgan": data.vqgan, **(info or {})})
        write_json(out / "prior-metrics.json", metrics)
    distributed.barrier(ranks)  # the prior is there for whatever the other ranks run next
    return metrics
