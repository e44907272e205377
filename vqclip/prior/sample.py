"""Sampling the prior: text → N token grids → N images, ranked by CLIP (DALL-E mini's pipeline).

Each step feeds the previous tokens through the decoder with its key/value cache and draws the
next token from `uncond·(1−s) + cond·s` (s = `supercondition`; the unconditional row reads the
empty caption), cut to the `top_k` most likely and the smallest set holding `top_p` of the
probability, at `temperature`. Only the first `codebook_size` logits are drawn from (min-dalle's
mega has more rows than codes). With s = 1 the unconditional row is skipped. CLIP ranks the
decoded images by their worst score over a few mirrored and shifted views (`rank_by_clip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .model import attention_mask
from .weights import LoadedPrior


@dataclass
class SampleSettings:
    count: int = 8  # samples drawn (and ranked by CLIP)
    temperature: float = 1.0
    top_k: int = 256  # 0 = no cut
    top_p: float = 1.0  # 1 = no cut
    supercondition: float = 4.0  # s; DALL-E mini uses 10-16 with its own models
    seed: int = 0
    batch_size: int = 16  # samples drawn together

    def check(self) -> None:
        if self.count < 1 or self.batch_size < 1:
            raise UserError(f"the number of samples must be at least 1, not {self.count}")
        if not 0 < self.temperature < float("inf"):
            raise UserError(f"temperature must be a positive number, not {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise UserError(f"top_k must be 0 or more and top_p in (0, 1], not {self.top_k} and {self.top_p}")
        if not 0 <= self.supercondition < float("inf"):
            raise UserError(f"the supercondition factor must be 0 or more, not {self.supercondition}")


def settings_for(prior: LoadedPrior | dict, **explicit) -> SampleSettings:
    """The one place sampling settings are built (`vqclip prior sample`, prior-sample batch jobs,
    init.mode=prior): the defaults ← the prior's own recommendation (prior.json "sample") ← `explicit`
    (None values are ignored, so flags and keys left out fall through to the prior's choice).

    `prior` is the loaded prior or just its info (`weights.prior_info`), for a batch job's hash,
    which is taken before any model is loaded. The result is checked (UserError if out of range)."""
    info = prior.info if isinstance(prior, LoadedPrior) else prior
    known = {f for f in SampleSettings.__dataclass_fields__}
    recommended = {k: v for k, v in dict(info.get("sample") or {}).items() if k in known}
    settings = SampleSettings(**{**recommended, **{k: v for k, v in explicit.items() if v is not None}})
    settings.check()
    return settings


@dataclass
class SampleResult:
    tokens: torch.Tensor  # N × rows × columns, best first when ranked
    images: torch.Tensor | None  # N × 3 × H × W in [0, 1]
    scores: list[float] | None  # CLIP score of each image (its worst view's), when a CLIP ranked them


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """-inf outside the top_k most likely tokens and outside the top_p nucleus (the first always kept)."""
    if top_k and top_k < logits.shape[-1]:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        probabilities = ordered.softmax(-1)
        outside = probabilities.cumsum(-1) - probabilities > top_p
        logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
    return logits


@torch.no_grad()
def sample_tokens(prior: LoadedPrior, text: str, settings: SampleSettings,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """`settings.count` token grids for `text`: count × rows × columns (int64)."""
    settings.check()
    model, config = prior.model, prior.model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(settings.seed)
    rows = prior.tokenizer.encode(["", text], config.text_length).to(device)  # unconditional, conditional
    guided = settings.supercondition != 1
    if not guided:
        rows = rows[1:]
    encoder_state = model.encoder(rows)
    mask = attention_mask(rows, config.pad_token)
    grids = []
    for first in range(0, settings.count, settings.batch_size):
        n = min(settings.batch_size, settings.count - first)
        expand = torch.arange(len(rows), device=device).repeat_interleave(n)  # [uncond × n, cond × n]
        grids.append(_sample_batch(model, encoder_state[expand], mask[expand], n, guided, settings, generator))
    return torch.cat(grids).view(settings.count, *config.grid)


def _sample_batch(model, encoder_state, mask, n: int, guided: bool, settings: SampleSettings,
                  generator: torch.Generator) -> torch.Tensor:
    config = model.config
    decoder = model.decoder
    text = decoder.text_keys_values(encoder_state)
    cache = decoder.new_cache(len(encoder_state), encoder_state.device, encoder_state.dtype)
    token = torch.full((len(encoder_state),), config.image_vocab, dtype=torch.long, device=encoder_state.device)
    out = torch.empty(n, config.image_length, dtype=torch.long, device=encoder_state.device)
    s = settings.supercondition
    for position in range(config.image_length):
        logits = decoder.step(token, position, text, mask, cache)[:, :config.codebook_size].float()
        if guided:
            logits = logits[:n] * (1 - s) + logits[n:] * s
        logits = filter_logits(logits / settings.temperature, settings.top_k, settings.top_p)
        drawn = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
        out[:, position] = drawn
        token = drawn.repeat(2) if guided else drawn
    return out


@torch.no_grad()
def rank_by_clip(clip, images: torch.Tensor, text: str) -> list[float]:
    """Each image's score: the lowest, over its views (`clip_views`), of Σ member weight · cosine(view, text).

    Why the worst view: a small CLIP can rate a malformed drawing highly in one exact pixel alignment,
    but rarely in all of them (measured on the shapes prior, in docs/experiments.md:
    #2026-11-22--ranking-prior-samples-by-clips-worst-view).
    """
    from ..models.clip import clip_scores

    target = [member.encode_text([text])[0] for member in clip.members]
    scores = clip_scores(clip, clip_views(images), [(1.0, target)])
    return scores.view(-1, len(images)).min(0).values.tolist()


def clip_views(images: torch.Tensor, shift_fraction: float = 0.05) -> torch.Tensor:
    """The images as drawn, mirrored, and shifted by `shift_fraction` of their side up, down, left and
    right (borders replicated): 6·N images, view by view."""
    height, width = images.shape[-2:]
    shift = max(1, round(shift_fraction * min(height, width)))
    padded = F.pad(images, (shift, shift, shift, shift), mode="replicate")
    shifted = [padded[..., shift + dy:shift + dy + height, shift + dx:shift + dx + width]
               for dy, dx in ((0, shift), (0, -shift), (shift, 0), (-shift, 0))]
    return torch.cat([images, images.flip(-1), *shifted])


@torch.no_grad()
def sample_images(prior: LoadedPrior, vqgan, text: str, settings: SampleSettings, *, clip=None) -> SampleResult:
    """Sample, decode with the VQGAN, and (with a CLIP ensemble) rank the images best first."""
    config = prior.model.config
    if config.codebook_size > vqgan.n_embed:
        raise UserError(f"the prior writes {config.codebook_size} codes but the VQGAN has {vqgan.n_embed}: "
                        "use the VQGAN the prior was trained with")
    device = next(vqgan.parameters()).device
    tokens = sample_tokens(prior, text, settings).to(device)
    images = torch.cat([vqgan.decode(vqgan.tokens_to_z(tokens[i:i + 16])) for i in range(0, len(tokens), 16)])
    if clip is None:
        return SampleResult(tokens, images, None)
    scores = rank_by_clip(clip, images, text)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return SampleResult(tokens[order], images[order], [scores[i] for i in order])


def prior_tokens(prior: LoadedPrior, vqgan, clip, text: str, grid: tuple[int, int], candidates: int,
                 keep: int, seed: int) -> torch.Tensor:
    """init.mode=prior: the `keep` best of `candidates` samples by CLIP (repeated if keep > candidates)."""
    if not text.strip():
        raise UserError("init.mode=prior needs a text prompt: the prior draws what the text says")
    if tuple(grid) != tuple(prior.model.config.grid):
        rows, columns = prior.model.config.grid
        raise UserError(f"the prior writes a {rows}×{columns} token grid, so with this VQGAN (factor "
                        f"{vqgan.factor}) size must be {columns * vqgan.factor} {rows * vqgan.factor}, "
                        f"not {grid[1] * vqgan.factor} {grid[0] * vqgan.factor}")
    result = sample_images(prior, vqgan, text, settings_for(prior, count=candidates, seed=seed), clip=clip)
    order = torch.arange(keep) % candidates
    return result.tokens[order.to(result.tokens.device)]
