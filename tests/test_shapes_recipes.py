"""The shapes-world training recipes: a few steps run, checkpoint, resume, and export a VQGAN
that loads through the same public loader as users' taming VQGANs."""

from __future__ import annotations

import json

import torch

from vqclip.cli import main
from vqclip.models.vqgan import load_vqgan
from vqclip.shapes.train_vqgan import VQGANRecipe, train


def small_recipe(**changes) -> VQGANRecipe:
    recipe = VQGANRecipe(steps=4, batch_size=4, checkpoint_every=2, restart_every=2, eval_images=8)
    for key, value in changes.items():
        setattr(recipe, key, value)
    return recipe


def test_vqgan_recipe_smoke_and_export(tmp_path):
    metrics = train(tmp_path, small_recipe(), progress=False)
    assert set(metrics) >= {"psnr_db", "codebook_used", "judge_agreement"}
    vqgan = load_vqgan(tmp_path / "vqgan.yaml", tmp_path / "vqgan.safetensors")  # the users' loader
    assert vqgan.factor == 4 and vqgan.n_embed == 512
    image = vqgan.decode(vqgan.quantize(vqgan.encode(torch.rand(1, 3, 64, 64))))
    assert image.shape == (1, 3, 64, 64)
    assert (tmp_path / "vqgan.safetensors").stat().st_size < 12e6  # fp16


def test_vqgan_recipe_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import pytest

    from vqclip.shapes import world

    train(tmp_path / "straight", small_recipe(), progress=False)
    real_batch, calls = world.batch, []

    def killed_during_step_3(*args, **kwargs):  # as if the process died after the step-2 checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(world, "batch", killed_during_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "stopped", small_recipe(), progress=False)
    monkeypatch.setattr(world, "batch", real_batch)
    train(tmp_path / "stopped", small_recipe(), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_from_the_command_line(tmp_path, capsys, monkeypatch):
    import vqclip.shapes.train_vqgan as recipe_module

    monkeypatch.setattr(recipe_module, "VQGANRecipe", lambda: small_recipe())
    assert main(["shapes", "train", "vqgan", "--steps", "2", "--out", str(tmp_path), "--quiet"]) == 0
    assert "psnr_db" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["shapes", "train", "vqgan", "--steps", "0", "--out", str(tmp_path)]) == 2


def test_clip_recipe_smoke_export_and_load(tmp_path):
    from vqclip.models.clip import load_clip
    from vqclip.shapes.train_clip import ClipRecipe
    from vqclip.shapes.train_clip import train as train_clip

    recipe = ClipRecipe(steps=3, contrast_groups=2, random_images=4, checkpoint_every=2, eval_images=8)
    vqgan_dir = tmp_path / "vqgan"
    train(vqgan_dir, small_recipe(steps=1), progress=False)
    vqgan = load_vqgan(vqgan_dir / "vqgan.yaml", vqgan_dir / "vqgan.safetensors")
    metrics = train_clip(tmp_path / "clip", recipe, vqgan, progress=False)
    assert set(metrics["clean"]) == {"colour", "shape", "background"} and "vqgan_reconstructions" in metrics
    clip = load_clip({"name": str(tmp_path / "clip" / "clip.json"),
                      "pretrained": str(tmp_path / "clip" / "clip.safetensors")})  # the users' loader
    assert clip.input_size == 64 and clip.mean.tolist() == [0.5, 0.5, 0.5]
    embedding = clip.encode_image(torch.rand(2, 3, 64, 64))
    assert embedding.shape == (2, 64)
    assert clip.encode_text(["a red circle"]).shape == (1, 64)


def test_the_shipped_weights_recipes_are_still_expressible():
    """Each shipped metrics file records the recipe that made the weights: every key it holds must
    still be a recipe setting (so nothing the shipped weights used was cut with the research code)."""
    from pathlib import Path

    from vqclip.prior.train import TrainConfig
    from vqclip.shapes.train_clip import ClipRecipe

    weights = Path(__file__).parent.parent / "vqclip" / "shapes" / "weights"
    VQGANRecipe(**json.loads((weights / "vqgan-metrics.json").read_text())["recipe"])
    assert ClipRecipe(**json.loads((weights / "clip-metrics.json").read_text())["recipe"]).noise == 0.05
    TrainConfig(**json.loads((weights / "prior-metrics.json").read_text())["train"])

