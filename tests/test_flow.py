"""Restyled videos along the optical flow (video.flow, vqclip/video/flow.py) and the hold that keeps
what the flow sees (hold.*, vqclip/controls/hold.py)."""

from __future__ import annotations

import json
import sys

import numpy
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vqclip import video
from vqclip.cli import main
from vqclip.controls.hold import Hold
from vqclip.errors import UserError
from vqclip.generation import generate
from vqclip.outputs import load_image, read_metadata, save_png
from vqclip.video.flow import flicker, motion, optical_flow, require_opencv, warp

TINY = {"cutn": 4, "seed": 3, "quiet": True}


def texture(size: int = 96, seed: int = 0) -> torch.Tensor:
    """A smooth random picture (3 × size × size) with enough texture for the flow to follow."""
    noise = torch.rand(1, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def test_the_flow_follows_a_synthetic_shift_and_the_warp_undoes_it():
    picture = texture(112)
    moved = picture.roll((2, 3), (-2, -1))[:, 8:-8, 8:-8]  # the content moved 3 px right and 2 px down
    still = picture[:, 8:-8, 8:-8]
    back = optical_flow(moved, still)  # moved's pixel (x, y) is at (x - 3, y - 2) in still
    inside = back[16:-16, 16:-16]
    assert inside[..., 0].median() == pytest.approx(-3, abs=0.25)
    assert inside[..., 1].median() == pytest.approx(-2, abs=0.25)
    warped = warp(still, back)
    before = (still - moved)[:, 16:-16, 16:-16].abs().mean()
    after = (warped - moved)[:, 16:-16, 16:-16].abs().mean()
    assert after < before / 5, (float(before), float(after))
    _, seen = motion(moved, still)
    assert seen[16:-16, 16:-16].mean() > 0.9


def test_flicker_is_the_change_along_the_motion():
    sources = [texture(96).roll(2 * k, -1) for k in range(4)]  # a steady pan
    assert flicker(sources, sources) < 0.02  # the sources themselves only move
    noisy = [(source + 0.2 * torch.randn(source.shape, generator=torch.Generator().manual_seed(k))).clamp(0, 1)
             for k, source in enumerate(sources)]
    assert flicker(noisy, sources) > 5 * flicker(sources, sources)


def test_the_hold_pulls_only_where_its_mask_is_white():
    picture = torch.zeros(1, 3, 8, 8)
    left = torch.zeros(1, 1, 8, 8)
    left[..., :4] = 1
    image = torch.ones(1, 3, 8, 8)
    image[..., :4] = 0.5
    assert float(Hold(picture, left, 2.0)(image)) == pytest.approx(2 * 0.25)  # the left half differs by 0.5
    assert float(Hold(picture, 1 - left, 2.0)(image)) == pytest.approx(2 * 1.0)
    assert float(Hold(picture, left, 2.0)(torch.ones(1, 3, 16, 16) * 0.5)) == pytest.approx(2 * 0.25)  # resized


def test_a_run_with_a_hold_ends_nearer_its_picture(tmp_path):
    target = tmp_path / "target.png"
    save_png(target, torch.tensor([0.1, 0.3, 0.9])[:, None, None].expand(3, 64, 64), {})
    common = dict(preset="shapes", steps=6, seed=2, quiet=True, outputs_root=str(tmp_path))
    plain = generate("a red circle on a white background", **common)
    held = generate("a red circle on a white background", **common, hold={"image": str(target), "weight": 50.0})
    goal = load_image(target)
    assert (held.images - goal).pow(2).mean() < 0.7 * (plain.images - goal).pow(2).mean()
    assert read_metadata(held.final_path)["config"]["hold"]["weight"] == 50.0


@pytest.fixture
def clip(tmp_path, write_clip):
    return write_clip(tmp_path / "clip.gif", 3)


def test_a_flow_restyle_starts_each_frame_from_the_warped_one_before_and_holds_it(clip, tmp_path, shapes_models):
    result = video.restyle(str(clip), "a blue square", preset="shapes-zoom", output=str(tmp_path / "styled.gif"),
                           run_dir=str(tmp_path / "run"), models=shapes_models, **TINY, init={"weight": 1.0},
                           video={"first_frame_steps": 2, "steps_per_frame": 2, "flow": True})
    frames = tmp_path / "run" / "frames"
    assert not (frames / "00000" / "warped.png").exists()
    for frame in (1, 2):
        folder = frames / f"{frame:05d}"
        assert Image.open(folder / "warped.png").size == (64, 64) and (folder / "seen.png").exists()
        hold = json.loads(json.dumps(read_metadata(folder / "final.png")["config"]["hold"]))
        assert hold == {"image": str(folder / "warped.png"), "mask": str(folder / "seen.png"), "weight": 10.0}
    flicker_value = json.loads((tmp_path / "styled.gif.json").read_text())["flicker"]
    assert 0 < flicker_value < 0.2
    assert numpy.asarray(Image.open(frames / "00002.png"))[32, 30:33].tolist() == PINNED
    again = video.restyle(str(clip), "a blue square", preset="shapes-zoom", output=str(tmp_path / "again.gif"),
                          run_dir=str(tmp_path / "again"), models=shapes_models, **TINY, init={"weight": 1.0},
                          video={"first_frame_steps": 2, "steps_per_frame": 2, "flow": True})
    assert all(torch.equal(a, b) for a, b in zip(result.frames, again.frames))  # the same pixels each time


PINNED = [[133, 44, 47], [105, 13, 29], [151, 28, 32]]  # a seeded restyle's pixels


def test_flow_from_the_command_line(clip, tmp_path):
    code = main(["video", "restyle", str(clip), "a blue square", "-p", "shapes-zoom", "video.flow=true",
                 "video.first_frame_steps=1", "video.steps_per_frame=1", "cutn=4", "--quiet",
                 "-o", str(tmp_path / "out.gif"), "--run-dir", str(tmp_path / "run")])
    assert code == 0 and (tmp_path / "run" / "frames" / "00001" / "seen.png").exists()
    with_flow = json.loads((tmp_path / "out.gif.json").read_text())["flicker"]
    code = main(["video", "restyle", str(clip), "a blue square", "-p", "shapes-zoom", "video.first_frame_steps=1",
                 "video.steps_per_frame=1", "cutn=4", "--quiet", "-o", str(tmp_path / "plain.gif"),
                 "--run-dir", str(tmp_path / "plain")])
    assert code == 0 and not (tmp_path / "plain" / "frames" / "00001" / "seen.png").exists()
    without = json.loads((tmp_path / "plain.gif.json").read_text())["flicker"]  # measured all the same
    assert without > 0 and with_flow > 0


@pytest.mark.parametrize("args,message", [
    (["video", "animate", "a red circle", "-p", "shapes-zoom", "video.flow=true"],
     "video.flow follows an input video's motion: it is for restyle, not animate"),
    (["video", "restyle", "CLIP", "a blue square", "-p", "shapes-zoom", "video.flow=true", "video.flow_weight=-1"],
     "video.flow_weight must be a finite number of 0 or more"),
    (["a red circle", "-p", "shapes", "hold.weight=3"], "hold.weight needs hold.image"),
    (["a red circle", "-p", "shapes", "hold.image=docs/tiles.png"], "holds nothing at hold.weight 0"),
])
def test_bad_flow_and_hold_settings_are_one_line(args, message, clip, tmp_path, capsys):
    code = main([str(clip) if arg == "CLIP" else arg for arg in args] + [f"outputs_root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_without_opencv_the_flow_says_how_to_install_it(monkeypatch, clip, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(UserError, match=r"pip install 'vqclip\[flow\]'"):
        require_opencv()
    code = main(["video", "restyle", str(clip), "a blue square", "-p", "shapes-zoom", "video.flow=true",
                 f"outputs_root={tmp_path}"])
    assert code == 2 and "opencv-python-headless" in capsys.readouterr().err
