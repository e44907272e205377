"""The shapes world as training data (vqclip/shapes/data.py): the general recipes draw it on the fly,
with the settings the shipped weights were trained with, checkpoint, resume, and export models that
load through the same public loaders as users' files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vqclip.cli import main
from vqclip.models.vqgan import load_vqgan
from vqclip.train import clip as clip_recipe
from vqclip.train import vqgan as vqgan_recipe
from vqclip.train.settings import build_config

WEIGHTS = Path(__file__).parent.parent / "vqclip" / "shapes" / "weights"
SMALL_VQGAN = ["steps=4", "batch_size=4", "checkpoint_every=2", "restart_every=2", "held_out=8"]


def small_vqgan(**changes) -> vqgan_recipe.VQGANTrainConfig:
    config = build_config("vqgan", "unused", SMALL_VQGAN, data="shapes")
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_vqgan_on_the_world_smoke_and_export(tmp_path):
    metrics = vqgan_recipe.train("shapes", tmp_path, small_vqgan(), progress=False)
    assert set(metrics) >= {"psnr_db", "codebook_used", "judge_agreement"} and metrics["data"] == "shapes"
    vqgan = load_vqgan(tmp_path / "vqgan.yaml", tmp_path / "vqgan.safetensors")  # the users' loader
    assert vqgan.factor == 4 and vqgan.n_embed == 512
    image = vqgan.decode(vqgan.quantize(vqgan.encode(torch.rand(1, 3, 64, 64))))
    assert image.shape == (1, 3, 64, 64)
    assert (tmp_path / "vqgan.safetensors").stat().st_size < 12e6  # fp16


def test_vqgan_on_the_world_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from vqclip.shapes import world

    vqgan_recipe.train("shapes", tmp_path / "straight", small_vqgan(), progress=False)
    real_batch, calls = world.batch, []

    def killed_during_step_3(*args, **kwargs):  # as if the process died after the step-2 checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(world, "batch", killed_during_step_3)
    with pytest.raises(KeyboardInterrupt):
        vqgan_recipe.train("shapes", tmp_path / "stopped", small_vqgan(), progress=False)
    monkeypatch.setattr(world, "batch", real_batch)
    vqgan_recipe.train("shapes", tmp_path / "stopped", small_vqgan(), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_world_from_the_command_line(tmp_path, capsys):
    assert main(["train", "vqgan", "shapes", "--steps", "2", "--out", str(tmp_path), "--quiet", *SMALL_VQGAN[1:]]) == 0
    assert "judge_agreement" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", "vqgan", "shapes", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert main(["train", "vqgan", "shapes", "--out", str(tmp_path), "--held-out", str(tmp_path)]) == 2
    assert "draws its own held-out images" in capsys.readouterr().err
    assert main(["shapes", "train", "clip", "--out", str(tmp_path)]) == 2  # the command that moved
    assert capsys.readouterr().err == ("vqclip: error: vqclip shapes train is now: vqclip train clip shapes --out DIR "
                                       "(or all three and a preset: vqclip train all shapes --out DIR)\n")


def test_clip_on_the_world_learns_from_a_vqgans_reconstructions(tmp_path):
    from vqclip.models.clip import load_clip

    vqgan_dir = tmp_path / "vqgan"
    vqgan_recipe.train("shapes", vqgan_dir, small_vqgan(steps=1), progress=False)
    vqgan = load_vqgan(vqgan_dir / "vqgan.yaml", vqgan_dir / "vqgan.safetensors")
    config = build_config("clip", "unused", ["steps=3", "batch_size=12", "checkpoint_every=2", "held_out=8",
                                             "recon_fraction=0.5"], data="shapes")
    metrics = clip_recipe.train("shapes", tmp_path / "clip", config, vqgan=vqgan, progress=False)
    assert set(metrics["clean"]) == {"colour", "shape", "background"} and "vqgan_reconstructions" in metrics
    clip = load_clip({"name": str(tmp_path / "clip" / "clip.json"),
                      "pretrained": str(tmp_path / "clip" / "clip.safetensors")})  # the users' loader
    assert clip.input_size == 64 and clip.mean.tolist() == [0.5, 0.5, 0.5]
    assert clip.encode_image(torch.rand(2, 3, 64, 64)).shape == (2, 64)
    assert clip.encode_text(["a red circle"]).shape == (1, 64)


def test_the_worlds_settings_are_the_shipped_weights_recipes():
    """Each shipped metrics file records the recipe that made the weights (in the layout of the
    recipes it was trained by): `train ... shapes` must still mean those settings."""
    from dataclasses import asdict

    vqgan = asdict(build_config("vqgan", "unused", [], data="shapes"))
    shipped = json.loads((WEIGHTS / "vqgan-metrics.json").read_text())["recipe"]
    architecture = {k: shipped["ddconfig"][k] for k in ("ch", "ch_mult", "num_res_blocks", "z_channels",
                                                         "attn_resolutions")}
    assert {**{k: v for k, v in shipped.items() if k not in ("ddconfig", "eval_images")}, **architecture,
            "size": shipped["ddconfig"]["resolution"], "held_out": shipped["eval_images"]}.items() <= vqgan.items()
    assert vqgan["disc_start"] == -1  # no discriminator

    clip = build_config("clip", "unused", [], data="shapes")
    shipped = json.loads((WEIGHTS / "clip-metrics.json").read_text())["recipe"]
    assert clip_recipe.model_config(clip)[0] == shipped["model_cfg"]
    assert clip.batch_size == 3 * shipped["contrast_groups"] + shipped["random_images"] and clip.held_out == 256
    assert {k: v for k, v in shipped.items() if k in asdict(clip)}.items() <= asdict(clip).items()

    prior = asdict(build_config("prior", "unused", [], data="shapes"))
    assert json.loads((WEIGHTS / "prior-metrics.json").read_text())["train"].items() <= prior.items()
    assert prior["merge_flat_codes"] and prior["world_images"] == 12288


def test_data_shapes_writes_a_folder_the_recipes_read(tmp_path, capsys):
    from vqclip.data.images import load_images
    from vqclip.shapes import world

    assert main(["data", "shapes", str(tmp_path / "shapes"), "--count", "6"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'shapes'}: 6 training and 256 held-out images\n"
    images = load_images(tmp_path / "shapes" / "train", 64, progress=False)
    first_image, first_caption, _ = next(world.stream(0))
    assert images.captions[0] == first_caption and len(images) == 6
    assert torch.equal(images.images[0], torch.from_numpy(first_image).permute(2, 0, 1))  # lossless PNG


def test_train_all_on_the_world_writes_a_preset_that_generates(tmp_path, capsys):
    """`vqclip train all shapes`: the three recipes on the world in order, each part's settings
    prefixed, the CLIP learning from the new VQGAN's reconstructions, then a preset over the three."""
    out = tmp_path / "all"
    assert main(["train", "all", "shapes", "--out", str(out), "--steps", "1", "--quiet", "vqgan.batch_size=2",
                 "vqgan.held_out=8", "clip.batch_size=12", "clip.held_out=8", "prior.world_images=16",
                 "prior.eval_items=4", "prior.world_prompts=1", "prior.batch_size=4"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {part: printed[part]["data"] for part in ("vqgan", "clip", "prior")} == dict.fromkeys(
        ("vqgan", "clip", "prior"), "shapes")
    assert "vqgan_reconstructions" in printed["clip"] and printed["prior"]["samples"]["prompts"] == 1
    assert main(["a red circle", "--preset", str(out / "preset.yaml"), "--steps", "1", "cutn=2",
                 "init.prior_candidates=1", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert (tmp_path / "run" / "final.png").is_file()
