"""Retraining the shipped worlds' models gives the same weights as the code that trained them.

The digests below were taken with the recipes as they were before training moved into one home
(`vqclip shapes train vqgan|clip|prior` and `vqclip train all` at commit e0fa736, a few steps
each, bf16 off, 2 threads): the shapes world drawn on the fly with its own settings, and the
digits folder through the three general recipes. A change to a loop, a random stream's order or
a default that changes the weights fails here."""

from __future__ import annotations

import hashlib

import pytest
from safetensors.torch import load_file

from vqclip.cli import main

SHAPES = {
    "vqgan": (["steps=3", "held_out=16", "sample_every=2"], "0f415295e55074f8"),
    "clip": (["steps=2", "held_out=16", "recon_fraction=0.2"], "b5e1e2b3e8466f95"),
    "prior": (["steps=2", "world_images=40", "eval_items=8", "world_prompts=0"], "de1c18eba8918d71"),
}
DIGITS = {"vqgan": "6e2be2b4a134f7e1", "clip": "7fbeb82ff51749ef", "prior": "d3a52a0267154a8d"}


def digest(path) -> str:
    """The weights' values, by name, independent of how the file lays them out."""
    tensors, hashed = load_file(str(path)), hashlib.sha256()
    for name in sorted(tensors):
        hashed.update(name.encode())
        hashed.update(tensors[name].float().numpy().tobytes())
    return hashed.hexdigest()[:16]


@pytest.mark.parametrize("recipe", SHAPES)
def test_the_shapes_recipes_retrain_to_the_same_weights(recipe, tmp_path):
    settings, expected = SHAPES[recipe]
    assert main(["train", recipe, "shapes", "--out", str(tmp_path), "--quiet", "bf16=false", *settings]) == 0
    assert digest(tmp_path / f"{recipe}.safetensors") == expected


def test_the_digits_recipes_retrain_to_the_same_weights(tmp_path):
    pytest.importorskip("sklearn")
    assert main(["data", "digits", str(tmp_path / "digits")]) == 0
    settings = ["vqgan.n_embed=128", "vqgan.ch=32", "vqgan.disc_start=1", "vqgan.restart_every=2", "vqgan.bf16=false",
                "vqgan.held_out=16", "clip.text_width=32", "clip.bf16=false", "clip.held_out=16",
                "prior.eval_items=16", "prior.bf16=false", "prior.eval_every=2"]
    assert main(["train", "all", str(tmp_path / "digits" / "train"), "--held-out", str(tmp_path / "digits" / "held-out"),
                 "--out", str(tmp_path / "all"), "--steps", "3", "--quiet", *settings]) == 0
    for recipe, expected in DIGITS.items():
        assert digest(tmp_path / "all" / recipe / f"{recipe}.safetensors") == expected, recipe
