"""The models shipped for the shapes world load through the public loaders and do their job."""

from __future__ import annotations

import pytest
import torch

from vqclip.models.registry import load_vqgan_from_config
from vqclip.shapes import judge, world


@pytest.fixture(scope="module")
def vqgan():
    return load_vqgan_from_config({"name": "shapes"}, progress=False)


@pytest.fixture(scope="module")
def held_out():
    samples = world.held_out(48)
    return torch.stack([world.to_tensor(image) for image, _, _ in samples]), [s for _, _, s in samples]


def test_shipped_vqgan_reconstructs_held_out_drawings(vqgan, held_out):
    images, scenes = held_out
    with torch.no_grad():
        tokens = vqgan.z_to_tokens(vqgan.encode(images))
        reconstructions = vqgan.decode(vqgan.tokens_to_z(tokens))
    assert tokens.shape == (48, 16, 16)
    mse = ((reconstructions - images) ** 2).mean((1, 2, 3))
    psnr = (10 * torch.log10(1 / mse)).mean().item()
    assert psnr >= 28, psnr
    agree = [judge.judge(r).colour == s.colour and judge.judge(r).shape == s.shape
             and judge.judge(r).background == s.background for r, s in zip(reconstructions, scenes)]
    assert sum(agree) / len(agree) >= 0.98
    assert tokens.unique().numel() > 100  # many codes in use even on 48 images
