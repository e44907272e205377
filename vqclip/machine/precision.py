"""Numerical precision: which dtype the networks compute in, for a generation and for training.

The one place that decides bf16 or fp32 (`resolve_precision`, `fast_bf16`): a generation's step
asks it through precision=auto, the training recipes and the prior through `training_autocast`.

A generation's step is dominated by convolutions and matrix products in the VQGAN decoder and
CLIP, and both run about twice as fast in bfloat16 on CPUs with AVX512-BF16/AMX and on recent
GPUs. Only the frozen networks change dtype: the latent z, the codebook (so quantisation picks
the same codes), the losses and the optimiser stay in fp32.

Autocast alone is not enough for frozen networks: it re-casts fp32 weights on every call (its
cast cache holds only weights that require grad), which on a CPU costs as much as the product
itself. So the networks get a bf16 copy of their weights once (`compute_copy`), and autocast keeps
the numerically delicate operations (softmax, norms on CUDA) in fp32.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import unknown_choice

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # the precision key: auto picks bf16 where it is fast


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """'auto' → bf16 where the hardware computes it fast, else fp32; or the named dtype."""
    if name == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    if name not in PRECISIONS:
        raise unknown_choice("precision", name, PRECISION_CHOICES)
    return PRECISIONS[name]


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 products run natively here (not emulated, which would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_has_bf16()
    return False


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:  # not Linux: oneDNN's own check
        return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for the frozen networks' forward passes; nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def training_autocast(device: torch.device, enabled: bool = True):
    """Mixed precision for a training step: bf16 where this device computes it fast, else fp32.

    The recipes' `bf16: true` means "bf16 if it pays off here", the same decision as
    precision=auto for a generation (so a GPU that only emulates bf16 trains in fp32). Unlike the
    frozen networks (compute_copy), trained weights stay fp32: the optimiser updates fp32 masters
    and autocast casts them per call. `enabled=False` is fp32 everywhere.
    """
    return autocast(device, resolve_precision("auto" if enabled else "fp32", device))


def in_autocast(function, device: torch.device, dtype: torch.dtype):
    """`function`, called under `autocast(device, dtype)` (for the forward passes of a step)."""
    if dtype == torch.float32:
        return function

    def wrapped(*args, **kwargs):
        with autocast(device, dtype):
            return function(*args, **kwargs)

    return wrapped


def compute_copy(module: nn.Module, dtype: torch.dtype, keep_fp32: tuple[str, ...] = ()) -> nn.Module:
    """A copy of a frozen module with its floating-point weights in `dtype` (the original untouched).

    `keep_fp32` names submodules or buffers that must stay exact (the VQGAN's codebook).
    """
    if dtype == torch.float32:
        return module
    twin = copy.deepcopy(module).to(dtype)
    _feed_attention_contiguous(twin)
    for name in keep_fp32:
        owner_name, _, attribute = name.rpartition(".")
        owner = twin.get_submodule(owner_name)
        value = getattr(owner, attribute)
        if isinstance(value, nn.Module):
            value.float()
        else:  # a buffer, e.g. CLIP's normalisation constants
            setattr(owner, attribute, value.float())
    return twin


class SeqFirstAttention(nn.Module):
    """A batch-first nn.MultiheadAttention run on contiguous sequence-first inputs: the same result.

    Given batch-first input, PyTorch's attention transposes it and projects the strided view; in
    bf16 on CPU that product copies the projection weight once per sequence position, which costs
    more than the product itself; a contiguous input avoids the copy (measured in
    docs/experiments.md#2026-11-22--a-fast-step-vqclip-bench).
    """

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        attention.batch_first = False
        self.attention = attention

    def forward(self, query, key, value, **kwargs):
        def seq_first(x):
            return x.transpose(0, 1).contiguous()

        q = seq_first(query)
        k = q if key is query else seq_first(key)
        v = k if value is key else seq_first(value)
        # CLIP's sequences are short (50 tokens for ViT-B/32): on CPU the plain softmax(QKᵀ)V kernels
        # beat the flash kernel, whose backward is slow there (docs/experiments.md: a fast step).
        kernels = sdpa_kernel(SDPBackend.MATH) if q.device.type == "cpu" else contextlib.nullcontext()
        with kernels:
            out, weights = self.attention(q, k, v, **kwargs)
        return out.transpose(0, 1), weights


def _feed_attention_contiguous(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.MultiheadAttention) and child.batch_first:
            setattr(module, name, SeqFirstAttention(child))
        else:
            _feed_attention_contiguous(child)
