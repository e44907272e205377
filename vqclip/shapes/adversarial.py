"""PGD on the image side of a CLIP: images, within a small ball, that raise the contrastive loss.

Why: gradient ascent on a small, ordinary classifier finds patterns it likes that are not shapes.
Classifiers trained on such worst-case perturbations have gradients that point at what a person
would see (Santurkar et al. 2019, "Image Synthesis with a Single (Robust) Classifier"), which is
what CLIP-guided generation follows. The recipe trains on the images this module makes.

Everything is in pixel space ([0, 1], before the CLIP's normalisation), so `eps` means the same
whatever the normalisation: L-inf eps is the largest change of one channel of one pixel, L2 eps
the length of the whole change of one image.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import UserError

NORMS = ("linf", "l2")


def check_settings(eps: float, steps: int, norm: str) -> None:
    if norm not in NORMS:
        raise UserError(f"adversarial_norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if eps < 0:
        raise UserError(f"adversarial_eps must be 0 (off) or more, not {eps}")
    if eps > 0 and steps < 1:
        raise UserError(f"adversarial_steps must be at least 1 when adversarial_eps is set, not {steps}")


def _per_image_l2(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_image_l2(delta)).clamp(max=1.0)


def _random_start(shape, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random point inside the ball, so the attack does not always begin where gradients vanish."""
    if norm == "linf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * eps
    direction = torch.randn(shape, generator=generator)
    radius = torch.rand(shape[0], generator=generator).view(-1, 1, 1, 1) * eps
    return direction / _per_image_l2(direction) * radius


def pgd_images(loss_of_images: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *,
               eps: float, steps: int, norm: str = "l2", generator: torch.Generator) -> torch.Tensor:
    """`images` moved by projected gradient ascent on `loss_of_images`, at most `eps` away, in [0, 1].

    The step is 2·eps/steps (so a few steps can reach the edge of the ball and move along it);
    L-inf steps follow the gradient's sign, L2 steps its direction. Returns detached images.
    """
    check_settings(eps, steps, norm)
    images = images.detach()
    if eps == 0:
        return images
    step_size = 2 * eps / steps
    delta = _random_start(images.shape, eps, norm, generator)
    delta = ((images + delta).clamp(0, 1) - images)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_of_images(images + delta)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            step = grad.sign() if norm == "linf" else grad / _per_image_l2(grad)
            delta = _project(delta + step_size * step, eps, norm)
            delta = (images + delta).clamp(0, 1) - images  # stay a valid image
    return (images + delta).detach()


def clip_attack_loss(model, text_features: torch.Tensor, loss_fn, normalize: Callable, autocast: bool):
    """The recipe's contrastive loss as a function of the images alone (text fixed, no grad to weights)."""
    logit_scale = model.logit_scale.detach().exp()

    def loss_of_images(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            image_features = model.encode_image(normalize(images), normalize=True)
        return loss_fn(image_features.float(), text_features, logit_scale)

    return loss_of_images


def adversarial_batch(model, images: torch.Tensor, text_features: torch.Tensor, loss_fn, normalize: Callable, *,
                      eps: float, steps: int, norm: str, fraction: float, autocast: bool,
                      generator: torch.Generator) -> torch.Tensor:
    """The batch with a `fraction` of its images replaced by their PGD versions (the rest stay clean).

    The attack runs with the model in eval mode, so BatchNorm's running statistics are not moved
    by the attack's own forward passes; the mode the model was in is restored afterwards.
    """
    if eps == 0 or fraction <= 0:
        return images
    chosen = torch.rand(len(images), generator=generator) < fraction
    if not chosen.any():
        return images
    was_training = model.training
    model.eval()
    try:
        attacked = pgd_images(clip_attack_loss(model, text_features.detach().float(), loss_fn, normalize, autocast),
                              images, eps=eps, steps=steps, norm=norm, generator=generator)
    finally:
        model.train(was_training)
    return torch.where(chosen[:, None, None, None], attacked, images)
