"""Upscaling (vqclip/controls/upscale.py): `vqclip upscale IMAGE [PROMPT] --scale 2|4`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vqclip
from vqclip.cli import main
from vqclip.config import merge_settings as merged
from vqclip.controls.upscale import upscale_overrides
from vqclip.errors import UserError
from vqclip.outputs import load_image, read_metadata
from vqclip.shapes.judge import judge


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_the_overrides_of_an_upscale(picture):
    assert upscale_overrides(str(picture), 2, []) == {
        "size": [80, 48], "init": {"mode": "image", "image": str(picture)}, "image_prompts": [str(picture)]}
    assert upscale_overrides(str(picture), 4, ["a cat"])["size"] == [160, 96]
    assert upscale_overrides(str(picture), 4, ["a cat"])["prompts"] == ["a cat"]
    assert "image_prompts" not in upscale_overrides(str(picture), 4, ["a cat"])
    assert merged({"init": {"mode": "image", "image": "a.png"}}, {"init": {"weight": 5}, "steps": 3}) == {
        "init": {"mode": "image", "image": "a.png", "weight": 5}, "steps": 3}
    with pytest.raises(UserError, match="--scale 3: vqclip upscales by 2 or 4"):
        upscale_overrides(str(picture), 3, [])


def test_the_command_and_python_give_the_same_picture(tiny_preset, picture, tmp_path, capsys):
    args = ["upscale", str(picture), "--scale", "2", "-p", str(tiny_preset), "--steps", "2", "--seed", "4", "--quiet"]
    assert main([*args, "--run-dir", str(tmp_path / "cli")]) == 0, capsys.readouterr().err
    final = tmp_path / "cli" / "final.png"
    with Image.open(final) as image:
        assert image.size == (80, 48)
    config = read_metadata(final)["config"]
    assert config["init"]["image"] == str(picture) and config["image_prompts"] == [str(picture)]
    result = vqclip.upscale(str(picture), scale=2, preset=str(tiny_preset), steps=2, seed=4, quiet=True,
                            run_dir=str(tmp_path / "python"))
    assert torch.equal(load_image(result.final_path), load_image(final))
    assert main(["--from", str(final), "--run-dir", str(tmp_path / "again"), "--quiet"]) == 0
    assert torch.equal(load_image(tmp_path / "again" / "final.png"), load_image(final))
    named = vqclip.upscale(str(picture), scale=2, preset=str(tiny_preset), steps=1, quiet=True,
                           outputs_root=str(tmp_path / "outputs"))
    assert named.run_dir.name.endswith("-small")  # no prompt: the run is named after its picture


@pytest.mark.parametrize("args,expected", [
    (["--scale", "3"], "--scale 3: vqclip upscales by 2 or 4"),
    (["--scale", "2", "--image", "nowhere.png"], "unrecognized arguments"),
], ids=["scale 3", "unknown flag"])
def test_bad_input_is_one_line(tiny_preset, picture, tmp_path, capsys, args, expected):
    code = main(["upscale", str(picture), "-p", str(tiny_preset), *args, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_missing_picture_is_one_line(tiny_preset, tmp_path, capsys):
    assert main(["upscale", str(tmp_path / "nowhere.png"), "--scale", "2", "-p", str(tiny_preset)]) == 2
    err = capsys.readouterr().err
    assert "nowhere.png" in err and err.count("\n") == 1


def test_a_shapes_picture_upscaled_4_times_shows_the_same_shape(shapes_models, draw_key, tmp_path):
    """64 → 256 px on the shapes world: the judge reads the same shape and colours (docs/upscaling.md
    has eight pictures measured)."""
    source = draw_key(tmp_path / "square.png", "square", "yellow", "purple", size=64, x=0.45, y=0.55)
    result = vqclip.upscale(str(source), scale=4, preset="shapes", models=shapes_models, steps=3, seed=1, quiet=True,
                            run_dir=str(tmp_path / "run"))
    assert result.images.shape[-2:] == (256, 256)
    seen = judge(result.images[0])
    assert (seen.colour, seen.shape, seen.background) == ("yellow", "square", "purple")
