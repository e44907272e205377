"""Canvases larger than memory (window=[w, h]): each step decodes, judges and improves one window.

A step's memory is set by the decoder's backward pass, which holds every activation of the image
it decodes. With a window, the gradient flows only through the window's pixels, so a step costs
what a run of the window's size costs, whatever the canvas.

The window is decoded exactly as the whole canvas decodes there. taming's decoder has two parts:

- the trunk, at the latent's resolution (the input convolution, the middle block with its
  attention, the first level's blocks). It sees every position, so it runs on the whole latent:
  at 1/factor of the side it is cheap, and the backward pass runs it again instead of keeping its
  activations. Its attention runs fused (`fused_attention`), without the hw × hw matrix.
- the tail (the upsampling levels and the output convolution): convolutions, whose reach is a few
  codes (`tail_reach`), and GroupNorms, whose statistics are the whole picture's. The tail runs
  on the window with `tail_reach` codes of context on each side, its GroupNorms normalising with
  the statistics of a whole decode (`norm_statistics`, taken without gradients, which hold a few
  activations instead of all: a canvas of several times the window's pixels fits where the
  window's step fits). They are renewed every `window_refresh` steps; between renewals the
  window's statistics lag the latent by a few steps (their gradient is left out).

The pictures written (progress, final) are whole decodes. docs/canvases.md has the figures.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from ..grad import clamp_with_grad


def _parts(vqgan):
    """taming's Decoder split into trunk and tail; a one-line error for a decoder that is not one."""
    decoder = getattr(vqgan, "decoder", None)
    if decoder is None or not hasattr(decoder, "up") or not hasattr(decoder, "mid"):
        raise UserError("window= needs a taming VQGAN (or min-dalle's detokenizer); DALL-E's dVAE decodes whole "
                        "pictures only: drop window, or pick another vqgan")
    top = decoder.num_resolutions - 1
    if any(len(decoder.up[level].attn) for level in range(top)):
        raise UserError("window= needs a VQGAN whose attention is at the latent's resolution only; this one attends "
                        "at higher resolutions, where a window cannot see the whole picture: drop window")
    return decoder, top


@contextlib.contextmanager
def fused_attention(*models: nn.Module):
    """Within the block, taming's attention blocks in `models` (encoders and decoders) compute with
    PyTorch's fused attention: the same sums without the (hw × hw) matrix, which on a large canvas
    is the largest tensor of all (at 2576 × 416 px, 18 GB in the shapes VQGAN's middle block)."""
    from taming.modules.diffusionmodules.model import AttnBlock

    blocks = {id(module): module for model in models for module in model.modules() if isinstance(module, AttnBlock)}
    before = {key: block.__dict__.get("forward") for key, block in blocks.items()}  # a model given twice, or nested
    for block in blocks.values():
        block.forward = functools.partial(_attend, block)
    try:
        yield
    finally:
        for key, block in blocks.items():
            if before[key] is None:
                del block.forward  # back to the class's forward
            else:
                block.forward = before[key]


def _attend(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """taming's AttnBlock.forward, one head through F.scaled_dot_product_attention."""
    h = block.norm(x)
    b, c, height, width = h.shape

    def tokens(conv):  # b × 1 × hw × c, one head; contiguous, or PyTorch falls back to the matrix
        return conv(h).reshape(b, 1, c, height * width).transpose(-1, -2).contiguous()

    attended = F.scaled_dot_product_attention(tokens(block.q), tokens(block.k), tokens(block.v))
    return x + block.proj_out(attended.transpose(-1, -2).reshape(b, c, height, width))


def _trunk(vqgan, z_q: torch.Tensor) -> torch.Tensor:
    """The decoder at the latent's resolution (taming's forward up to the first upsampling)."""
    decoder, top = _parts(vqgan)
    h = decoder.conv_in(vqgan.post_quant_conv(z_q.to(vqgan.post_quant_conv.weight.dtype)))
    h = decoder.mid.block_2(decoder.mid.attn_1(decoder.mid.block_1(h, None)), None)
    for i_block in range(decoder.num_res_blocks + 1):
        h = decoder.up[top].block[i_block](h, None)
        if len(decoder.up[top].attn) > 0:
            h = decoder.up[top].attn[i_block](h)
    return h


def _tail(vqgan, h: torch.Tensor, crop=None) -> torch.Tensor:
    """The rest of taming's forward: each level's upsampling and blocks, then the output; in [0, 1].

    `crop(h, level)`, where given, trims h before the upsampling into `level`.
    """
    from taming.modules.diffusionmodules.model import nonlinearity

    decoder, top = _parts(vqgan)
    for level in reversed(range(top)):
        h = decoder.up[level + 1].upsample(crop(h, level) if crop else h)
        for block in decoder.up[level].block:
            h = block(h, None)
    if not decoder.give_pre_end:
        h = decoder.conv_out(nonlinearity(decoder.norm_out(h)))
    return clamp_with_grad((h + 1) / 2 if vqgan.signed_output else h, 0.0, 1.0)


def _tail_norms(vqgan) -> list[nn.GroupNorm]:
    """In the order the tail runs them."""
    decoder, top = _parts(vqgan)
    modules = [m for level in reversed(range(top)) for m in decoder.up[level].modules()] + [decoder.norm_out]
    return [m for m in modules if isinstance(m, nn.GroupNorm)]


def _reaches(vqgan) -> list[float]:
    """reaches[level]: how many codes away an output pixel sees through the tail from the upsampling
    into `level` on (a convolution at level l runs at factor / 2**l pixels a code)."""
    decoder, top = _parts(vqgan)
    reaches, reach = [0.0] * top, 0.0
    for level in range(top):
        convolutions = [m for m in decoder.up[level].block.modules() if isinstance(m, nn.Conv2d)]
        convolutions.append(decoder.up[level + 1].upsample.conv)
        if level == 0:
            convolutions.append(decoder.conv_out)
        reach += sum((c.kernel_size[0] - 1) // 2 for c in convolutions) * 2 ** level / vqgan.factor
        reaches[level] = reach
    return reaches


def tail_reach(vqgan) -> int:
    """How many codes away a pixel can see through the tail: the context a window needs."""
    reaches = _reaches(vqgan)
    return math.ceil(reaches[-1]) if reaches else 0


def norm_statistics(vqgan, z_q: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A whole decode without gradients: the picture and each tail GroupNorm's (mean, variance) per
    batch item and group, as the windows need them."""
    statistics = []

    def record(module, inputs):
        x = inputs[0].float()
        grouped = x.reshape(x.shape[0], module.num_groups, -1)
        statistics.append((grouped.mean(-1), grouped.var(-1, unbiased=False)))

    hooks = [norm.register_forward_pre_hook(record) for norm in _tail_norms(vqgan)]
    try:
        with torch.no_grad():
            picture = _tail(vqgan, _trunk(vqgan, z_q))
    finally:
        for hook in hooks:
            hook.remove()
    return picture, statistics


@contextlib.contextmanager
def _frozen_norms(vqgan, statistics):
    """Within the block, the tail's GroupNorms normalise with the given statistics."""
    norms = _tail_norms(vqgan)

    def frozen(module, mean, var):
        # (x − mean) · rstd · weight + bias as x · scale + shift: one tensor the size of x, and none
        # kept for the backward pass (GroupNorm's own keeps x)
        scale = torch.rsqrt(var + module.eps).repeat_interleave(module.num_channels // module.num_groups, 1) \
            * module.weight
        shift = module.bias - mean.repeat_interleave(module.num_channels // module.num_groups, 1) * scale

        def forward(x):
            return torch.addcmul(shift[..., None, None].to(x.dtype), x, scale[..., None, None].to(x.dtype))
        return forward

    for norm, (mean, var) in zip(norms, statistics, strict=True):
        norm.forward = frozen(norm, mean, var)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward  # back to the class's forward


def decode_window(vqgan, z_q: torch.Tensor, box: tuple[int, int, int, int], statistics) -> torch.Tensor:
    """The pixels of the latent box (top, left, height, width in codes) as the whole decode draws them.

    The trunk runs on the whole latent; the tail on the box with as much context around it as the
    rest of the tail reaches, trimmed level by level (the finest level adds a few pixels, the
    coarsest a few codes), and less at the canvas's edges, where the whole decode pads too.
    """
    top, left, height, width = box
    reaches, f = _reaches(vqgan), vqgan.factor
    # recomputed in the backward pass: on a large canvas the whole latent's activations outweigh the window's
    h = checkpoint(_trunk, vqgan, z_q, use_reentrant=False) if torch.is_grad_enabled() else _trunk(vqgan, z_q)
    rows, columns = h.shape[-2:]
    origin = [0, 0]  # the first row and column h holds, in pixels of its resolution

    def trim(h: torch.Tensor, level: int) -> torch.Tensor:
        scale = f // 2 ** (level + 1)  # h's pixels a code
        margin = math.ceil(reaches[level] * scale)
        y0, x0 = max(top * scale - margin, 0), max(left * scale - margin, 0)
        y1, x1 = min((top + height) * scale + margin, rows * scale), min((left + width) * scale + margin,
                                                                           columns * scale)
        h = h[..., y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]]
        origin[:] = [2 * y0, 2 * x0]  # the upsampling that follows doubles the side
        return h

    with _frozen_norms(vqgan, statistics):
        picture = _tail(vqgan, h, trim)
    y, x = top * f - origin[0], left * f - origin[1]
    return picture[..., y:y + height * f, x:x + width * f]


def window_box(canvas: tuple[int, int], window: tuple[int, int], generator: torch.Generator) -> tuple[int, int, int, int]:
    """A random window (top, left, height, width in codes) on a canvas of (height, width) codes.

    The offset is drawn up to a whole window past each edge and clamped: across each side, a pixel
    on the edge is judged at least half as often as any other (drawn inside only, a window's width
    times less).
    """
    def offset(size: int, length: int) -> int:
        drawn = int(torch.randint(1 - length, size, (), generator=generator))
        return min(max(drawn, 0), size - length)

    return offset(canvas[0], window[0]), offset(canvas[1], window[1]), window[0], window[1]


class WindowedDecoder:
    """(z, step) → the step's window of the quantised z, for vqclip.optimize.

    The statistics come from a whole decode at the first step and every `refresh` steps after;
    `picture` keeps that decode (what a live preview shows).
    """

    def __init__(self, vqgan, window: tuple[int, int], refresh: int, generator: torch.Generator, quantize):
        self.vqgan, self.window, self.refresh, self.generator = vqgan, window, refresh, generator
        self.quantize = quantize  # the fp32 model's: the codes do not depend on the step's precision
        self.statistics, self.renewed_at = None, None
        self.picture = None  # the whole picture of the latest renewal

    def __call__(self, z: torch.Tensor, step: int = 0) -> torch.Tensor:
        z_q = self.quantize(z)
        if self.statistics is None or step - self.renewed_at >= self.refresh:
            self.picture, self.statistics = norm_statistics(self.vqgan, z_q.detach())
            self.renewed_at = step
        f = self.vqgan.factor
        box = window_box(z_q.shape[-2:], (self.window[1] // f, self.window[0] // f), self.generator)
        return decode_window(self.vqgan, z_q, box, self.statistics)

    def whole(self, z: torch.Tensor) -> torch.Tensor:
        """The whole picture of z, without gradients."""
        return norm_statistics(self.vqgan, self.quantize(z))[0]

    def state(self) -> dict | None:
        """What a resumed run needs to go on with the same statistics (a few numbers a norm)."""
        if self.statistics is None:
            return None
        return {"renewed_at": self.renewed_at, "statistics": [[mean.cpu(), var.cpu()] for mean, var in self.statistics]}

    def restore(self, state: dict | None, device: torch.device) -> None:
        if state is not None:
            self.renewed_at = int(state["renewed_at"])
            self.statistics = [(mean.to(device), var.to(device)) for mean, var in state["statistics"]]


def check_window(window, size: tuple[int, int], vqgan) -> tuple[int, int] | None:
    """window= as (width, height) pixels, or None for the whole canvas; a one-line error for a bad
    one, or for a VQGAN that cannot decode windows."""
    if window is None:
        return None
    tail_reach(vqgan)
    factor = vqgan.factor
    if len(window) != 2 or any(not isinstance(side, int) or side <= 0 or side % factor for side in window):
        raise UserError(f"window must be two positive whole numbers (width height), multiples of the VQGAN's factor "
                        f"{factor}, not {list(window)}")
    if window[0] > size[0] or window[1] > size[1]:
        raise UserError(f"window {window[0]}×{window[1]} is larger than the canvas {size[0]}×{size[1]}: make it "
                        "smaller, or drop window")
    return int(window[0]), int(window[1])


__all__ = ["WindowedDecoder", "check_window", "decode_window", "fused_attention", "norm_statistics", "tail_reach",
           "window_box"]
