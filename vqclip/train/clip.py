"""`vqclip train clip DATA --out DIR`: an open_clip CLIP trained on any captioned folder.

The model is the tiny towers the shapes world uses (`model=tiny`: open_clip's ModifiedResNet image
tower and a small text transformer, the image tower sized to the data) or any open_clip
architecture (`model=RN50`, `model=ViT-B-32`, ...), from random weights or fine-tuned from an
open_clip checkpoint file (`--from FILE`: read without running pickled code). Each step: a batch of
images (small random shifts and noise; `flip=true` adds left-right flips, wrong for text and
digits) against their captions, under CLIP's symmetric contrastive loss. Captions repeat in class
data ("the digit 7" on many images), so images and texts with the same caption count as matches,
not as negatives; with all captions distinct this is CLIP's loss. Every `eval_every` steps the
held-out images pick their caption among all distinct captions of the data (zero-shot accuracy).
The result, DIR/clip.json (the open_clip model config with its mean and std) + DIR/clip.safetensors,
loads as `clip.models=[{name: DIR/clip.json, pretrained: DIR/clip.safetensors}]`.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..atomic import atomic_open, atomic_write_text
from ..errors import UserError
from ..machine.precision import training_autocast
from ..outputs import write_json
from . import distributed, loop
from .common import check_positive, training_data, world_named
from .loop import TrainState, warmup_cosine

TINY_MEAN, TINY_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@dataclass
class ClipTrainConfig:
    steps: int = 1000
    batch_size: int = 64
    size: int = 32  # images are brought to size × size (the tiny image tower: a multiple of 32)
    lr: float = 1e-3  # from scratch; fine-tuning a pretrained CLIP wants about 1e-5
    weight_decay: float = 0.1
    warmup: int = 100
    shift: int = 2  # random shifts of up to this many pixels
    noise: float = 0.05  # up to this much Gaussian noise per image
    flip: bool = False  # left-right flips (wrong for text and digits)
    recon_fraction: float = 0.0  # share of images reconstructed by --vqgan first (what generation shows CLIP)
    eval_every: int = 250
    checkpoint_every: int = 100
    held_out: int = 64  # images kept out of training for the figures (without --held-out)
    seed: int = 0
    bf16: bool = True  # autocast where bf16 is fast (vqclip.machine.precision decides)
    model: str = "tiny"  # or an open_clip architecture (open_clip.list_models())
    base: str = ""  # fine-tune from this open_clip checkpoint file; "" = random weights
    # model=tiny: the towers' sizes
    embed_dim: int = 64
    width: int = 16  # the image tower's ResNet width
    text_width: int = 64
    text_layers: int = 3
    context_length: int = 24


def model_config(config: ClipTrainConfig) -> tuple[dict, tuple, tuple]:
    """(open_clip model config, mean, std) of the model to train."""
    import open_clip

    if config.model == "tiny":
        if config.size % 32:
            raise UserError(f"size={config.size}: the tiny image tower needs a multiple of 32 (it halves 5 times)")
        return ({"embed_dim": config.embed_dim,
                 "vision_cfg": {"image_size": config.size, "layers": [1, 1, 1, 1], "width": config.width,
                                "head_width": 32},
                 "text_cfg": {"context_length": config.context_length, "vocab_size": 49408,
                              "width": config.text_width, "heads": max(1, config.text_width // 16),
                              "layers": config.text_layers}}, TINY_MEAN, TINY_STD)
    model_cfg = open_clip.get_model_config(config.model)
    if model_cfg is None:
        from ..errors import unknown_choice

        raise unknown_choice("CLIP architecture (model=)", config.model, ["tiny", *open_clip.list_models()])
    return model_cfg, tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD)


def build_model(config: ClipTrainConfig, model_cfg: dict):
    """The CLIP with random weights, or with the weights of `config.base`."""
    import open_clip

    from ..models.checkpoint import load_state_dict, state_dict_mismatch

    model = (open_clip.CustomTextCLIP if "hf_model_name" in model_cfg.get("text_cfg", {}) else open_clip.CLIP)(
        **model_cfg)
    if config.base:
        state = {k.removeprefix("module."): v for k, v in load_state_dict(config.base).items()}
        problem = state_dict_mismatch(model.state_dict(), state)
        if problem:
            raise UserError(f"--from {config.base} does not fit CLIP model {config.model}: {problem}")
        model.load_state_dict(state)
    return model


def match_matrix(captions: list[str]) -> torch.Tensor:
    """targets[i, j] = 1/k where caption j is one of the k captions equal to caption i."""
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    return same / same.sum(1, keepdim=True)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, captions: list[str]):
    logits = scale * image @ text.T
    targets = match_matrix(captions).to(logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def augment(images: torch.Tensor, config: ClipTrainConfig, generator: torch.Generator) -> torch.Tensor:
    n = len(images)
    if config.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if config.shift:
        shifts = torch.randint(-config.shift, config.shift + 1, (n, 2), generator=generator).tolist()
        images = torch.stack([image.roll(tuple(s), dims=(1, 2)) for image, s in zip(images, shifts)])
    scale = torch.rand(n, 1, 1, 1, generator=generator) * config.noise
    return (images + scale * torch.randn(images.shape, generator=generator)).clamp(0, 1)


class Preprocess:
    """Images in [0, 1] at any size → the model's input: resized to its size, normalised."""

    def __init__(self, model_cfg: dict, mean, std):
        size = model_cfg["vision_cfg"].get("image_size", 224)
        self.size = size if isinstance(size, int) else size[0]
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bicubic", antialias=True,
                                   align_corners=False)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)


@torch.no_grad()
def zero_shot(model, tokenizer, preprocess, images: torch.Tensor, captions: list[str], choices: list[str],
              device: torch.device) -> dict:
    """How often each image's best caption among `choices` is its own."""
    text = F.normalize(model.encode_text(tokenizer(choices).to(device)).float(), dim=-1)
    right = 0
    for first in range(0, len(images), 64):
        image = F.normalize(model.encode_image(preprocess(images[first:first + 64].to(device))).float(), dim=-1)
        picks = (image @ text.T).argmax(1).tolist()
        right += sum(choices[p] == c for p, c in zip(picks, captions[first:first + 64]))
    return {"zero_shot_accuracy": round(right / len(images), 4), "choices": len(choices)}


def embed(model, tokens: torch.Tensor, pixels: torch.Tensor):
    """(unit image embeddings, unit text embeddings, logit scale): what the contrastive loss compares."""
    text = model.encode_text(tokens, normalize=True)
    image = model.encode_image(pixels, normalize=True)
    return image, text, model.logit_scale.exp()


def contrastive_step(model, optimizer, schedule, tokens: torch.Tensor, pixels: torch.Tensor, loss_fn,
                     device: torch.device, bf16: bool, towers=None, ranks=distributed.Ranks()) -> torch.Tensor:
    """One step: both towers (`towers(tokens, pixels)`, by default `embed` on `model`; bf16 autocast where
    fast), `loss_fn(image, text, scale)` over the global batch (every rank's share of it), the update,
    and the logit scale kept at most 100 as in CLIP. Returns the loss."""
    with training_autocast(device, bf16):
        image, text, scale = (towers or functools.partial(embed, model))(tokens, pixels)
    loss = loss_fn(distributed.gather(image.float(), ranks), distributed.gather(text.float(), ranks), scale)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, 4.6052)
    return loss.detach()


def train(data: str | Path, out: str | Path, config: ClipTrainConfig, *, vqgan=None,
          held_out: str | Path | None = None, template: str | None = None, resume: bool = False, device: str = "cpu",
          progress: bool = True) -> dict:
    """Train; checkpoint to OUT/train_state.pt; write OUT/clip.{json,safetensors} and OUT/clip-metrics.json.

    DATA is a folder or list of captioned images, or a world drawn on the fly (`shapes`); `vqgan`
    (a loaded VQGAN) reconstructs `recon_fraction` of every batch first."""
    check_positive(config, ("steps", "batch_size", "size", "eval_every", "checkpoint_every"))
    (ranks, device), out = distributed.start(device, config.batch_size), Path(out)
    progress = progress and ranks.main
    world = world_named(data, held_out, template)
    if config.recon_fraction > 0 and vqgan is None:
        raise UserError(f"recon_fraction={config.recon_fraction} needs --vqgan (the VQGAN whose reconstructions "
                        "the CLIP learns from)")
    model_cfg, mean, std = model_config(config)
    if not world:
        train_set, held, report = training_data(data, config.size, held_out=held_out,
                                                held_out_count=config.held_out, template=template, progress=progress)
        choices = sorted(set(train_set.captions) | set(held.captions))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = world.make_rng(config.seed) if world else random.Random(config.seed)
    model = build_model(config, model_cfg)

    def draw():
        if world:
            images, captions = world.caption_batch(rng, config.batch_size)
        else:
            index = torch.randint(len(train_set), (config.batch_size,), generator=generator)
            images, captions = train_set.floats(index), [train_set.captions[i] for i in index.tolist()]
        if vqgan is not None and config.recon_fraction > 0:
            chosen = torch.rand(len(images), generator=generator) < config.recon_fraction
            if chosen.any():
                with torch.no_grad():
                    images[chosen] = vqgan.decode(vqgan.quantize(vqgan.encode(images[chosen]))).clamp(0, 1)
        return augment(images, config, generator), captions

    if world:
        report, loss_fn = {"data": world.NAME}, world.clip_loss()

        def figures(model, tokenizer, preprocess) -> dict:
            return world.clip_figures(model, tokenizer, preprocess, config.held_out, vqgan)
    else:
        loss_fn = contrastive_loss

        def figures(model, tokenizer, preprocess) -> dict:
            return zero_shot(model, tokenizer, preprocess, held.floats(), held.captions, choices, device)

    history = fit(model, model_cfg, mean, std, draw, loss_fn, figures, out, config, rng=rng,
                  generator=generator, resume=resume, device=device, progress=progress)
    metrics = {**(history[-1] if history else {}), "steps": config.steps, "history": history, **report,
               "config": asdict(config)}
    metrics.pop("step", None)
    if ranks.main:
        write_json(out / "clip-metrics.json", metrics)
    return metrics


def fit(model, model_cfg: dict, mean, std, draw, loss_fn, figures, out: Path, config: ClipTrainConfig, *,
        rng, generator: torch.Generator, resume: bool, device: torch.device, progress: bool) -> list[dict]:
    """The loop over `draw()`'s batches ((images in [0, 1], captions)) with `loss_fn(image, text, scale,
    captions)`; every `eval_every` steps `figures(model, tokenizer, preprocess)` joins the history.
    Writes OUT/clip.{json,safetensors}; returns the history. Under torchrun each rank embeds its
    share of every batch (vqclip/train/distributed.py); rank 0 writes."""
    import open_clip

    ranks, device = distributed.start(device, config.batch_size)
    model = distributed.global_batch_norms(model, ranks).to(device).train()  # the ResNet tower's norms
    preprocess = Preprocess(model_cfg, mean, std)
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"].get("context_length", 77))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup, config.steps))
    state = TrainState(out / "train_state.pt", model, optimizer, schedule, rng, generator)
    if resume and state.path.is_file():
        state.resume(asdict(config))
    distributed.seed_rank(config.seed, ranks)
    towers = distributed.parallel(model, embed, ranks, device)

    def step(index: int) -> dict:
        images, captions = draw()
        loss = contrastive_step(model, optimizer, schedule, tokenizer(distributed.shard(captions, ranks)).to(device),
                                preprocess(distributed.shard(images, ranks).to(device)),
                                lambda image, text, scale: loss_fn(image, text, scale, captions), device,
                                config.bf16, towers, ranks)
        return {"loss": round(loss.item(), 4)}

    history = loop.fit("clip", config, state, step, every=config.eval_every,
                       evaluate=lambda done: figures(model, tokenizer, preprocess), ranks=ranks, device=device,
                       progress=progress)
    model.eval()
    if ranks.main:
        export(model, model_cfg, mean, std, out)
    distributed.barrier(ranks)  # the export is there for whatever the other ranks run next
    return history


def export(model, model_cfg: dict, mean, std, out: Path) -> None:
    """The open_clip hub layout: OUT/clip.json (model config + preprocessing) and fp16 OUT/clip.safetensors."""
    from safetensors.torch import save

    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(mean), "std": list(std)}}
    atomic_write_text(out / "clip.json", json.dumps(config, indent=2) + "\n")
    with atomic_open(out / "clip.safetensors") as f:
        f.write(save({k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
                      for k, v in model.state_dict().items()}))
