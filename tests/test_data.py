"""The one data layer: the three layouts, every image mode brought to RGB at the training size,
bad files skipped and counted, the one-line errors; and `vqclip data digits`."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.data.images import decode, load_images, load_pairs, usable_pairs
from vqclip.data.pairs import read_pairs
from vqclip.errors import UserError


def write_image(path, mode="RGB", size=(40, 20), colour=(200, 40, 10)):
    image = Image.new("RGB", size, colour)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(0)  # fully transparent: laid over white
    elif mode == "L":
        image = image.convert("L")
    elif mode == "I;16":
        image = Image.fromarray(np.full(size[::-1], 65535, dtype=np.uint16))  # 16-bit white
    image.save(path)
    return path


def test_the_three_layouts(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.txt").write_text("a red circle\n")
    (tmp_path / "b.png").write_bytes(b"")  # no caption: left out
    assert read_pairs(tmp_path) == [(str(tmp_path / "a.png"), "a red circle")]
    (tmp_path / "list.csv").write_text("image,caption\na.png,a red circle\n")
    assert read_pairs(tmp_path / "list.csv") == [(str(tmp_path / "a.png"), "a red circle")]
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "a.png", "text": "x"}) + "\n")
    assert read_pairs(tmp_path / "list.jsonl") == [(str(tmp_path / "a.png"), "x")]
    classes = tmp_path / "classes"
    for name in ("red_fox", "cat"):
        (classes / name).mkdir(parents=True)
        (classes / name / "1.jpg").write_bytes(b"")
    assert read_pairs(classes, "a photo of a {}") == [(str(classes / "cat" / "1.jpg"), "a photo of a cat"),
                                                       (str(classes / "red_fox" / "1.jpg"), "a photo of a red fox")]
    assert read_pairs(classes)[0][1] == "cat"  # without a template: the class name alone


def test_layout_errors_are_one_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"path": "a.png"}) + "\n")
    with pytest.raises(UserError, match="caption"):
        read_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        read_pairs(tmp_path / "empty")
    with pytest.raises(UserError, match="neither a folder"):
        read_pairs(tmp_path / "missing")
    with pytest.raises(UserError, match="needs a {}"):
        read_pairs(tmp_path, "a photo")
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(UserError, match=r"list.txt is a \.txt file: the data must be a folder of captioned images"):
        read_pairs(tmp_path / "list.txt")


@pytest.mark.parametrize("argv", [
    ["train", "vqgan", "{image}", "--out", "{out}"],
    ["train", "clip", "{image}", "--out", "{out}"],
    ["train", "vqgan", "{folder}", "--out", "{out}", "--held-out", "{image}"],
    ["train", "prior", "{image}", "--out", "{out}", "--vqgan", "shapes"],
])
def test_a_single_image_as_data_says_what_data_may_be(tmp_path, capsys, argv):
    """One image given where a data set goes: not a UTF-8 error from reading the PNG as a list."""
    folder = tmp_path / "digits"
    folder.mkdir()
    for name in ("0000", "0001"):
        write_image(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text("the digit 0")
    values = {"image": str(folder / "0000.png"), "folder": str(folder), "out": str(tmp_path / "out")}
    assert main([a.format(**values) for a in argv] + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"vqclip: error: {folder / '0000.png'} is one image: the data must be a folder of captioned "
                   "images (a.png beside a.txt, or class sub-folders) or a .csv/.jsonl list of image and caption")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode, expected", [("RGB", (200, 40, 10)), ("P", (200, 40, 10)), ("L", (84, 84, 84)),
                                            ("RGBA", (255, 255, 255)), ("I;16", (255, 255, 255))])
def test_every_mode_becomes_rgb_at_the_size(tmp_path, mode, expected):
    image = decode(write_image(tmp_path / "x.png", mode), 16)
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert torch.allclose(image[:, 8, 8] * 255, torch.tensor(expected, dtype=torch.float32), atol=1.5)


def test_exif_rotation_and_centre_crop(tmp_path):
    # 40 × 20, left half black, right half white, stored rotated: EXIF orientation 6 turns it upright
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = decode(tmp_path / "r.jpg", 10)
    # upright it is 20 wide and 40 high, black above white; the centre 20 × 20 holds both halves,
    # black in its top rows, white in its bottom ones (unrotated, they would be side by side)
    assert image.shape == (3, 10, 10)
    assert image[:, :4].max() < 0.1 and image[:, -4:].min() > 0.9
    plain = decode(write_image(tmp_path / "w.png", size=(40, 20)), 10)
    assert plain.shape == (3, 10, 10)


def test_bad_files_are_skipped_and_counted(tmp_path):
    for name in ("good1", "good2"):
        write_image(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text(name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "broken.txt").write_text("broken")
    data = load_images(tmp_path, 8, progress=False)
    assert data.captions == ["good1", "good2"] and data.images.shape == (2, 3, 8, 8)
    assert data.images.dtype == torch.uint8 and data.report()["skipped"] == 1
    assert "broken.png" in data.report()["skipped_examples"][0]
    kept, skipped = usable_pairs(read_pairs(tmp_path))
    assert [caption for _, caption in kept] == ["good1", "good2"] and len(skipped) == 1
    with pytest.raises(UserError, match="none of the 2 images"):
        load_pairs([(str(tmp_path / "broken.png"), "x"), (str(tmp_path / "gone.png"), "y")], 8, progress=False)


def test_the_prior_builds_its_data_through_the_same_layer(tmp_path, capsys):
    folder = tmp_path / "classes"
    for index, name in enumerate(("red", "blue")):
        (folder / name).mkdir(parents=True)
        write_image(folder / name / "1.png", colour=(255 * (1 - index), 0, 255 * index), size=(64, 64))
    (folder / "red" / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "prior"
    code = main(["train", "prior", str(folder), "--template", "a {} square", "--out", str(out), "--vqgan", "shapes",
                 "--quiet", "steps=1", "eval_items=1", "width=16", "heads=1", "glu=16", "bf16=false"])
    assert code == 0, capsys.readouterr().err
    from vqclip.prior.data import load_data

    data = load_data(out / "data.pt")
    assert data.captions == ["a blue square", "a red square"] and data.image_tokens.shape == (2, 16, 16)
    assert "skipped" in capsys.readouterr().err


# -- vqclip data digits --------------------------------------------------------------------------
def test_digits_folder(tmp_path):
    pytest.importorskip("sklearn", reason="vqclip data digits needs scikit-learn (pip install 'vqclip[digits]')")
    assert main(["data", "digits", str(tmp_path / "digits")]) == 0
    root = tmp_path / "digits"
    labels = list(csv.DictReader(io.StringIO((root / "labels.csv").read_text())))
    assert len(labels) == 1797 and sum(row["split"] == "held-out" for row in labels) == 359
    assert (root / "train" / "0005.txt").read_text() == "a handwritten five\n"
    assert (root / "held-out" / "0004.txt").read_text() == "the digit 4\n"
    data = load_images(root / "held-out", 32, progress=False)
    assert len(data) == 359 and data.report()["skipped"] == 0
    # white on black, grey: the first held-out image (a 4), its centre column pinned
    pixel = data.images[0]
    assert torch.equal(pixel[0], pixel[1]) and pixel.float().mean().item() == pytest.approx(65.2871, abs=1e-3)
    assert pixel[0, ::4, 16].tolist() == [134, 135, 149, 106, 31, 157, 202, 187]


def test_digits_without_scikit_learn_is_one_line(without_sklearn, tmp_path, capsys):
    assert main(["data", "digits", str(tmp_path / "d")]) == 2
    assert "pip install 'vqclip[digits]'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
