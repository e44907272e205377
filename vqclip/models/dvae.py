"""OpenAI's DALL-E discrete VAE as a decoder: its networks, its files, and the relaxed latent.

The published `encoder.pkl` / `decoder.pkl` are whole pickled modules of the `dall_e` package.
They are read by vqclip.models.checkpoint's restricted loader, which lets the file name only
the classes such a module holds (each stands in as an inert record, none is imported or run);
the weights taken out of the records load, strictly, into the networks below. These have the
package's parameter names (`blocks.group_1.block_1.res_path.conv_2.w`), so its state dicts load
as they are; tests hold the output equal to the package's on the same weights.

The latent is one logit per code and position (B × vocab × h × w). Each optimisation step turns
it into code weights by a relaxation (see `relax`): a straight-through Gumbel-softmax sample or
a softmax whose temperature falls over the run. Final images decode the most likely code at
each position, as a VQGAN's decode the nearest code.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..grad import clamp_with_grad, straight_through
from .checkpoint import (
    check_state_dict,
    load_pickled_module,
    load_state_dict,
    module_tensors,
    record_class,
)

LOGIT_LAPLACE_EPS = 0.1  # pixels live in [eps, 1 - eps] for the dVAE's logit-Laplace likelihood
GROUPS = 4  # the package fixes four resolution groups: the grid is 1/8 of the image's side
TOKEN_MASS = 0.99  # a code index as logits: its code holds this share of the softmax at temperature 1
LOGIT_LIMIT = 50.0  # z is clamped to ±this: softmax sees only differences, far smaller in practice
RELAXATIONS = ("gumbel", "softmax")  # relaxation.kind

# All that a published file may name besides tensors and plain containers: the modules the encoder
# and decoder are made of. (Both files' names: a swapped file is then named as such, not as foreign.)
DVAE_CLASSES = ("dall_e.encoder.Encoder", "dall_e.encoder.EncoderBlock", "dall_e.decoder.Decoder",
                "dall_e.decoder.DecoderBlock", "dall_e.utils.Conv2d", "torch.nn.modules.container.Sequential",
                "torch.nn.modules.activation.ReLU", "torch.nn.modules.linear.Identity",
                "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.upsampling.Upsample")


def map_pixels(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → the encoder's input range [eps, 1 - eps]."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def unmap_pixels(x: torch.Tensor) -> torch.Tensor:
    """The decoder's mean in [0, 1] → pixels, clamped (with the gradient that heals out-of-range values)."""
    return clamp_with_grad((x - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS), 0.0, 1.0)


# -- the networks (the package's layout and parameter names) -----------------------------------------
class Conv2d(nn.Module):
    """A same-padded convolution whose parameters are called `w` and `b`, as the package's.

    `padding_mode` is nn.Conv2d's: "zeros", or "circular" for seamless tiles (vqclip.controls.tiling).
    """

    padding_mode = "zeros"

    def __init__(self, n_in: int, n_out: int, kw: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw * kw))
        self.b = nn.Parameter(torch.zeros(n_out))

    @property
    def padding(self) -> int:
        return (self.w.shape[-1] - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return F.conv2d(x, self.w, self.b, padding=self.padding)
        return F.conv2d(F.pad(x, (self.padding,) * 4, mode=self.padding_mode), self.w, self.b)


class Block(nn.Module):
    """A residual block: identity (or a 1×1 projection) plus a scaled four-convolution path.

    Encoder blocks use kernels 3, 3, 3, 1; decoder blocks 1, 3, 3, 3. The residual is scaled by
    1 / n_layers², n_layers being the blocks in the whole network.
    """

    def __init__(self, n_in: int, n_out: int, n_layers: int, kernels: tuple[int, int, int, int]):
        super().__init__()
        hidden = n_out // 4
        self.post_gain = 1 / n_layers**2
        self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        widths = (n_in, hidden, hidden, hidden, n_out)
        layers = []
        for i, kw in enumerate(kernels, start=1):
            layers += [(f"relu_{i}", nn.ReLU()), (f"conv_{i}", Conv2d(widths[i - 1], widths[i], kw))]
        self.res_path = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


def _group(n_in: int, n_out: int, blocks: int, n_layers: int, kernels, resample: nn.Module | None) -> nn.Sequential:
    parts = [(f"block_{i + 1}", Block(n_in if i == 0 else n_out, n_out, n_layers, kernels)) for i in range(blocks)]
    if resample is not None:
        parts.append(("upsample" if isinstance(resample, nn.Upsample) else "pool", resample))
    return nn.Sequential(OrderedDict(parts))


class Encoder(nn.Module):
    """Images (mapped by map_pixels) → logits over the codes, B × vocab × H/8 × W/8."""

    def __init__(self, n_hid: int = 256, n_blk_per_group: int = 2, input_channels: int = 3, vocab_size: int = 8192):
        super().__init__()
        n_layers = GROUPS * n_blk_per_group
        widths = [n_hid * 2**g for g in range(GROUPS)]  # 1, 2, 4, 8 × n_hid
        parts = [("input", Conv2d(input_channels, n_hid, 7))]
        for g in range(GROUPS):
            pool = nn.MaxPool2d(kernel_size=2) if g < GROUPS - 1 else None
            parts.append((f"group_{g + 1}", _group(widths[max(g - 1, 0)], widths[g], n_blk_per_group, n_layers,
                                                    (3, 3, 3, 1), pool)))
        parts.append(("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()),
                                                           ("conv", Conv2d(widths[-1], vocab_size, 1))]))))
        self.blocks = nn.Sequential(OrderedDict(parts))
        self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Decoder(nn.Module):
    """Code weights, B × vocab × h × w → 2·channels statistics per pixel (the first ones: the means' logits)."""

    def __init__(self, n_init: int = 128, n_hid: int = 256, n_blk_per_group: int = 2, output_channels: int = 3,
                 vocab_size: int = 8192):
        super().__init__()
        n_layers = GROUPS * n_blk_per_group
        widths = [n_hid * 2 ** (GROUPS - 1 - g) for g in range(GROUPS)]  # 8, 4, 2, 1 × n_hid
        parts = [("input", Conv2d(vocab_size, n_init, 1))]
        for g in range(GROUPS):
            upsample = nn.Upsample(scale_factor=2, mode="nearest") if g < GROUPS - 1 else None
            parts.append((f"group_{g + 1}", _group(n_init if g == 0 else widths[g - 1], widths[g], n_blk_per_group,
                                                    n_layers, (1, 3, 3, 3), upsample)))
        parts.append(("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()),
                                                           ("conv", Conv2d(n_hid, 2 * output_channels, 1))]))))
        self.blocks = nn.Sequential(OrderedDict(parts))
        self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# -- the relaxation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Relaxation:
    """How a step turns logits into code weights (the `relaxation` section of a run config).

    gumbel: a one-hot sample of softmax(z) per position in the forward pass (Gumbel-max, seeded by
    the run's seed and the step), the gradient of softmax((z + g) / t) in the backward pass.
    softmax: softmax(z / t), the weighted mixture of codes, decoded as it is.
    t falls geometrically from `temperature` to `temperature_end` over `steps`.
    """

    kind: str = "softmax"
    temperature: float = 1.0
    temperature_end: float = 0.1
    steps: int = 1
    seed: int = 0

    def temperature_at(self, step: int) -> float:
        fraction = min(max(step, 0) / max(self.steps - 1, 1), 1.0)
        return self.temperature * (self.temperature_end / self.temperature) ** fraction


def _one_hot(indices: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(indices, n).movedim(-1, 1).to(dtype)


# -- the adapter: the same interface as vqclip.models.vqgan.VQGAN -----------------------------------
class DVAE(nn.Module):
    """The dVAE behind the VQGAN adapter's interface; z is B × vocab × h × w logits.

    `decode` returns images in [0, 1]. `encoder` is optional (image init and image keys need it).
    """

    kind = "dvae"
    keep_fp32 = ()  # nothing to keep exact in a bf16 copy: the relaxation runs on the fp32 model

    def __init__(self, decoder: Decoder, encoder: Encoder | None = None):
        super().__init__()
        self.decoder, self.encoder = decoder, encoder
        self.n_embed = self.embed_dim = decoder.vocab_size
        self.factor = 2 ** (GROUPS - 1)

    @property
    def z_min(self) -> torch.Tensor:
        return torch.full((), -LOGIT_LIMIT, device=self.decoder.blocks.input.w.device)

    @property
    def z_max(self) -> torch.Tensor:
        return torch.full((), LOGIT_LIMIT, device=self.decoder.blocks.input.w.device)

    def tokens_to_z(self, tokens: torch.Tensor) -> torch.Tensor:
        """Code indices → logits where each position's code holds TOKEN_MASS of the softmax."""
        gap = math.log(TOKEN_MASS * (self.n_embed - 1) / (1 - TOKEN_MASS))
        return _one_hot(tokens.long(), self.n_embed, torch.float32) * gap

    def z_to_tokens(self, z: torch.Tensor) -> torch.Tensor:
        return z.argmax(1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """The most likely code at each position (one-hot); the gradient of softmax(z) passes back."""
        return straight_through(z.softmax(1), _one_hot(z.argmax(1), self.n_embed, z.dtype))

    def relax(self, z: torch.Tensor, step: int, relaxation: Relaxation) -> torch.Tensor:
        """The code weights optimisation step `step` decodes (see Relaxation)."""
        t = relaxation.temperature_at(step)
        if relaxation.kind == "softmax":
            return (z / t).softmax(1)
        generator = torch.Generator(z.device).manual_seed((relaxation.seed * 1_000_003 + step) % 2**63)
        uniform = torch.rand(z.shape, generator=generator, device=z.device).clamp_(1e-10, 1 - 1e-7)
        soft = ((z - (-uniform.log()).log()) / t).softmax(1)
        return straight_through(soft, _one_hot(soft.argmax(1), self.n_embed, soft.dtype))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → the encoder's logits (the latent that decodes to its codes)."""
        if self.encoder is None:
            raise UserError("this dVAE was loaded without its encoder: image init and image keys need "
                            "vqgan.encoder=encoder.pkl beside vqgan.checkpoint=decoder.pkl")
        weight = self.encoder.blocks.input.w
        return self.encoder(map_pixels(images).to(weight.dtype)).float()

    def decode(self, codes: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
        """Code weights (one-hot or soft) → images in [0, 1].

        `checkpoint`: keep only each group's input for the backward pass and recompute the rest.
        """
        x = codes.to(self.decoder.blocks.input.w.dtype)
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as recompute

            for part in self.decoder.blocks:
                x = recompute(part, x, use_reentrant=False)
        else:
            x = self.decoder(x)
        return unmap_pixels(torch.sigmoid(x[:, :3].float()))


# -- loading ------------------------------------------------------------------------------------------
def _blocks_per_group(state: dict, path: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(r"blocks\.group_1\.block_(\d+)\.", key))}
    if not found:
        raise UserError(f"{path} is not a DALL-E dVAE file: it has no blocks.group_1 weights")
    return max(found)


def _shape(state: dict, key: str, path: str) -> tuple[int, ...]:
    if key not in state:
        raise UserError(f"{path} is not a DALL-E dVAE file of the expected kind: it has no {key}")
    return tuple(state[key].shape)


def build_decoder(state: dict, path: str) -> Decoder:
    """A Decoder shaped like the weights in `state` (on the meta device: the weights replace its own)."""
    n_init, vocab = _shape(state, "blocks.input.w", path)[:2]
    out2, n_hid = _shape(state, "blocks.output.conv.w", path)[:2]
    with torch.device("meta"):
        return Decoder(n_init, n_hid, _blocks_per_group(state, path), out2 // 2, vocab)


def build_encoder(state: dict, path: str) -> Encoder:
    n_hid, channels = _shape(state, "blocks.input.w", path)[:2]
    vocab = _shape(state, "blocks.output.conv.w", path)[0]
    with torch.device("meta"):
        return Encoder(n_hid, _blocks_per_group(state, path), channels, vocab)


def read_weights(path: str | Path, part: str) -> dict[str, torch.Tensor]:
    """The state dict of a dVAE file: a published pickle (`*.pkl`, read by the restricted loader),
    or a plain state dict with the package's names (.pt, .safetensors)."""
    path = Path(path)
    if path.suffix != ".pkl":
        return load_state_dict(path)
    root = f"dall_e.{part}.{part.capitalize()}"
    record = load_pickled_module(path, DVAE_CLASSES, "a DALL-E dVAE file")
    if record_class(record) != root:
        raise UserError(f"{path} holds {record_class(record)}, not the dVAE's {part} ({root}): "
                        f"give {part}.pkl here")
    return module_tensors(record)


def load_dvae(decoder: str | Path, encoder: str | Path | None = None, device: str | torch.device = "cpu") -> DVAE:
    """The dVAE from its decoder file (and optionally its encoder file), frozen, in fp32 on `device`."""
    state = read_weights(decoder, "decoder")
    decoder_net = build_decoder(state, str(decoder))
    check_state_dict(decoder_net, state, str(decoder), "a DALL-E dVAE decoder")
    decoder_net.load_state_dict(state, strict=True, assign=True)
    encoder_net = None
    if encoder is not None:
        state = read_weights(encoder, "encoder")
        encoder_net = build_encoder(state, str(encoder))
        check_state_dict(encoder_net, state, str(encoder), "a DALL-E dVAE encoder")
        encoder_net.load_state_dict(state, strict=True, assign=True)
        if encoder_net.vocab_size != decoder_net.vocab_size:
            raise UserError(f"{encoder} writes {encoder_net.vocab_size} codes but {decoder} reads "
                            f"{decoder_net.vocab_size}: give the encoder and decoder of one dVAE")
    model = DVAE(decoder_net, encoder_net).float().to(device).eval()
    model.requires_grad_(False)  # frozen: gradients go to z, never to the weights
    return model
