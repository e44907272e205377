"""Palettes (vqclip/controls/palette.py) and mirror symmetry (vqclip/controls/symmetry.py): the losses, the indexed PNG,
the keys and flags, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.controls.palette import Palette, hex_colour, kmeans_colours, palette_share, parse_colour, quantized
from vqclip.controls.symmetry import mirror_difference
from vqclip.errors import UserError
from vqclip.generation import generate
from vqclip.outputs import load_image, read_metadata

SHAPES_RED_BLUE = ["#dc1e1e", "#1e46dc"]  # the shapes world's red and blue


def test_colours_parse_and_print():
    assert parse_colour("#f00") == (1.0, 0.0, 0.0) and parse_colour("1E46DC") == parse_colour("#1e46dc")
    assert hex_colour(parse_colour("#e63946")) == "#e63946"
    for bad in ("#12345", "red", "#ggg", ""):
        with pytest.raises(UserError, match="is not a hex colour"):
            parse_colour(bad)


def test_kmeans_finds_the_colours_of_a_picture():
    picture = torch.zeros(3, 30, 30)
    picture[:, :, :10] = torch.tensor(parse_colour("#264653"))[:, None, None]
    picture[:, :, 10:20] = torch.tensor(parse_colour("#e9c46a"))[:, None, None]
    picture[:, :, 20:] = torch.tensor(parse_colour("#e76f51"))[:, None, None]
    found = sorted(hex_colour(colour) for colour in kmeans_colours(picture, 3))
    assert found == ["#264653", "#e76f51", "#e9c46a"]
    assert len(kmeans_colours(picture, 8)) == 3  # no more colours than the picture has


def test_the_palette_loss_pulls_free_pixels_onto_the_palette():
    """Gradient descent on the pixels alone: the loss's pull, without a decoder's limits."""
    colours = torch.tensor([parse_colour(text) for text in ("#264653", "#e9c46a", "#e76f51")])
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    palette = Palette(colours, weight=1.0, ramp_steps=10)
    assert palette.weight_at(0) == pytest.approx(0.1) and palette.weight_at(50) == 1.0
    before = palette_share(pixels.detach(), colours)
    optimizer = torch.optim.Adam([pixels], lr=0.02)
    for step in range(150):
        optimizer.zero_grad()
        palette.loss(pixels, step).backward()
        optimizer.step()
    assert before < 0.1 and palette_share(pixels.detach().clamp(0, 1), colours) >= 0.9


def test_an_indexed_png_holds_exactly_the_palette():
    colours = torch.tensor([parse_colour(text) for text in ("#000000", "#ffffff")])
    grey = torch.full((3, 8, 8), 0.5)
    plain, dithered = quantized(grey, colours, dither=False), quantized(grey, colours, dither=True)
    assert plain.mode == dithered.mode == "P" and plain.getpalette()[:6] == [0, 0, 0, 255, 255, 255]
    assert len(set(np.asarray(plain).ravel())) == 1  # nearest: one colour for a flat grey
    assert set(np.asarray(dithered).ravel()) == {0, 1}  # Floyd–Steinberg: both, in about equal shares
    assert 0.4 < np.asarray(dithered).mean() < 0.6


def test_mirror_difference():
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    symmetric = (image + image.flip(-1)) / 2
    assert torch.equal(mirror_difference(symmetric, "horizontal"), torch.zeros(2))
    assert (mirror_difference(symmetric, "vertical") > 0.1).all()
    assert torch.equal(mirror_difference(image, "none"), torch.zeros(2))
    both = (symmetric + symmetric.flip(-2)) / 2
    assert mirror_difference(both, "both").abs().max() < 1e-7


def test_symmetry_makes_the_mirror_difference_small(shapes_models, tmp_path):
    """The figures in docs/palettes-and-symmetry.md: mean mirror difference in 255ths."""
    def run(**settings):
        result = generate("a red circle on a blue background", preset="shapes", models=shapes_models, steps=40,
                          seed=3, size=[64, 64], quiet=True, run_dir=str(tmp_path / str(len(settings))), **settings)
        return result, float(mirror_difference(result.images[:1], "horizontal")[0]) * 255

    plain, plain_difference = run()
    mirrored, difference = run(symmetry="horizontal")
    assert difference <= 2 < plain_difference
    assert read_metadata(mirrored.run_dir / "final.png")["mirror_difference"] * 255 == pytest.approx(difference, abs=0.01)
    assert mirrored.scores[0] > 0.95 * plain.scores[0]


def test_a_palette_run_end_to_end(tiny_preset, tmp_path, capsys):
    """--palette with palette.quantize: final.png and -o are indexed PNGs of exactly the palette,
    the share before indexing is recorded, and --from repeats the run."""
    colours = ["#264653", "#e9c46a", "#e76f51"]
    args = ["a red circle", "-p", str(tiny_preset), "--palette", ",".join(colours), "palette.quantize=true",
            "palette.dither=true", "--steps", "4", "--seed", "2", "--quiet"]
    assert main([*args, "--run-dir", str(tmp_path / "run"), "-o", str(tmp_path / "out.png")]) == 0, \
        capsys.readouterr().err
    final = tmp_path / "run" / "final.png"
    with Image.open(final) as image:
        assert image.mode == "P" and image.getpalette() == [value for text in colours for value in
                                                            (round(c * 255) for c in parse_colour(text))]
        indices = np.asarray(image)
    assert set(indices.ravel()) == {0, 1, 2}
    metadata = read_metadata(final)
    assert metadata["config"]["palette"]["colours"] == colours and 0 <= metadata["palette_share"] <= 1
    assert torch.equal(load_image(tmp_path / "out.png"), load_image(final))
    assert main(["--from", str(final), "--run-dir", str(tmp_path / "again"), "--quiet"]) == 0
    with Image.open(tmp_path / "again" / "final.png") as again:
        assert np.array_equal(np.asarray(again), indices)


def test_palette_from_an_image(tiny_preset, tmp_path, draw_key):
    picture = draw_key(tmp_path / "key.png", "circle", "red", background="blue", size=32)
    result = generate("a red circle", preset=str(tiny_preset), steps=2, seed=1, run_dir=str(tmp_path / "run"),
                      palette={"image": str(picture), "size": 2, "quantize": True})
    with Image.open(result.final_path) as image:
        found = sorted(image.getpalette()[i:i + 3] for i in (0, 3))
    drawn = sorted([round(c * 255) for c in parse_colour(text)] for text in SHAPES_RED_BLUE)
    assert np.abs(np.array(found) - np.array(drawn)).max() <= 6  # the circle's smoothed edge shifts the means a little


BAD = [
    (["--palette", "#12345"], "palette colour '#12345' is not a hex colour"),
    (["--palette", "#000", "--palette-from", "IMAGE"], "give palette.colours or palette.image"),
    (["palette.quantize=true"], "palette.quantize and palette.dither need a palette"),
    (["--palette", "#000,#fff", "palette.dither=true"], "add palette.quantize=true"),
    (["--palette-from", "IMAGE", "palette.size=1"], "palette.size is the number of colours"),
    (["--palette", "#000", "palette.ramp=2"], "palette.ramp is the fraction"),
    (["--palette-from", "nowhere.png"], "palette.image: no such file"),
    (["--symmetry", "diagonal"], "unknown symmetry 'diagonal'"),
    (["--symmetry", "both", "symmetry_weight=-1"], "symmetry_weight must be a finite number"),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[expected for _, expected in BAD])
def test_bad_values_are_one_line_errors(tiny_preset, tmp_path, capsys, draw_key, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    image = str(draw_key(tmp_path / "key.png", "circle", "red", size=32))
    code = main(["a red circle", "-p", str(tiny_preset), *[image if a == "IMAGE" else a for a in args],
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
