"""Merging the shapes VQGAN's interchangeable flat codes: fewer distinct codes, the same pictures."""

from __future__ import annotations

import itertools

import pytest
import torch

from vqclip.prior.data import encode_tokens
from vqclip.prior.flat_codes import FlatCodes, find_flat_codes, merge_flat_codes
from vqclip.shapes import judge, world


@pytest.fixture(scope="module")
def vqgan():
    from vqclip.models.registry import load_vqgan_from_config

    return load_vqgan_from_config({"name": "shapes"}, progress=False)


@pytest.fixture(scope="module")
def flat(vqgan):
    return find_flat_codes(vqgan)


@pytest.fixture(scope="module")
def drawings(vqgan):
    items = list(itertools.islice(world.captioned_scenes(world.make_rng(3, "held-out")), 48))
    images = torch.stack([world.to_tensor(world.draw(scene)) for scene, _ in items])
    return items, images, encode_tokens(vqgan, images).long()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((10 * torch.log10(1 / (a - b).pow(2).mean((1, 2, 3)))).mean())


def test_flat_codes_are_grouped_by_colour(flat):
    assert flat.merged > 100  # the shapes VQGAN spends hundreds of codes on a few flat colours
    grouped = flat.group[flat.group >= 0]
    assert grouped.max() == len(flat.representative) - 1
    # every representative stands for its own group
    assert torch.equal(flat.group[flat.representative], torch.arange(len(flat.representative)))


@torch.no_grad()
def test_merging_keeps_the_pictures_and_cuts_the_code_noise(vqgan, flat, drawings):
    items, images, tokens = drawings
    merged = merge_flat_codes(tokens, flat)

    def distinct(grids):
        return sum(len(grid.unique()) for grid in grids) / len(grids)

    assert distinct(merged) < distinct(tokens) - 3
    before = vqgan.decode(vqgan.tokens_to_z(tokens)).clamp(0, 1)
    after = vqgan.decode(vqgan.tokens_to_z(merged)).clamp(0, 1)
    assert psnr(after, images) > psnr(before, images) - 0.5
    for (scene, caption), image in zip(items, after):
        scores = judge.score_against(judge.judge(image), world.parse_caption(caption))
        assert all(ok is not False for ok in scores.values()), caption


def test_only_tokens_inside_a_flat_region_change(flat, drawings):
    _, _, tokens = drawings
    merged = merge_flat_codes(tokens, flat)
    changed = merged != tokens
    assert changed.any()
    assert (flat.group[tokens[changed]] >= 0).all()  # never a code that is not flat
    assert torch.equal(merge_flat_codes(merged, flat), merged)  # merging twice changes nothing more


def test_a_hand_made_table():
    # codes 0, 1 and 2 are one flat colour (0 stands for it); code 3 is not flat
    flat = FlatCodes(group=torch.tensor([0, 0, 0, -1]), representative=torch.tensor([0]))
    tokens = torch.tensor([[[1, 2, 1, 3],
                            [2, 1, 2, 1],
                            [1, 2, 1, 2]]])
    # a token changes when its 3 × 3 neighbourhood (edges replicated) is all group 0: not next to the 3
    expected = torch.tensor([[[0, 0, 1, 3],
                              [0, 0, 2, 1],
                              [0, 0, 0, 0]]])
    assert torch.equal(merge_flat_codes(tokens, flat), expected)
