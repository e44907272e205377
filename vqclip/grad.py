"""Two autograd tricks of VQGAN+CLIP: a value in the forward pass, another path for the gradient.

Both are plain functions over tensors, built from `y.detach() + (x - x.detach())`: the forward
value is exactly `y` (the second term is exactly zero), the backward pass sees `x`. No custom autograd.Function is needed, so they also work under
torch.compile and autocast.
"""

from __future__ import annotations

import torch


def replace_grad(forward_value: torch.Tensor, backward_path: torch.Tensor) -> torch.Tensor:
    """`forward_value` in the forward pass; the gradient flows through `backward_path`."""
    return forward_value.detach() + (backward_path - backward_path.detach())


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Straight-through quantisation: forward uses the code `z_q`, the gradient reaches `z` unchanged."""
    return replace_grad(z_q, z)


def clamp_with_grad(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Clamp in the forward pass, without killing the gradient that would bring `x` back in range.

    Inside [low, high] the gradient passes unchanged. Outside, it passes only where a descent step
    (x -= lr * grad) moves the value back toward the range: above `high` a positive gradient, below
    `low` a negative one; elsewhere it is zero, as for an ordinary clamp.
    """
    clamped = x.clamp(low, high)
    # A mask that is 1 where the gradient may pass. It must be computed from the gradient itself, so a
    # hook does it: the forward value stays the clamp, the backward keeps only the "healing" gradients.
    out = replace_grad(clamped, x)
    if not out.requires_grad:  # no graph (inference, torch.no_grad): nothing to hook
        return out
    values = x.detach()
    out.register_hook(lambda grad: grad * _passes(values, grad, low, high))
    return out


def _passes(x: torch.Tensor, grad: torch.Tensor, low: float, high: float) -> torch.Tensor:
    inside = (x >= low) & (x <= high)
    healing = ((x > high) & (grad > 0)) | ((x < low) & (grad < 0))
    return (inside | healing).to(grad.dtype)
