"""The emoji world's data (`vqclip data emoji OUT`): the named emoji of Debian's colour emoji font,
composited on the shapes world's colours, with a fixed held-out set of (emoji, background) pairs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from vqclip.cli import main
from vqclip.emoji import data as emoji_data
from vqclip.errors import UserError

FONT = Path(emoji_data.FONT_PATHS[0])
needs_font = pytest.mark.skipif(not FONT.is_file(), reason="needs Debian's fonts-noto-color-emoji "
                                "(apt install fonts-noto-color-emoji; .ci/run installs it)")


@pytest.fixture(scope="module")
def font():
    return emoji_data.find_font()


@needs_font
def test_the_font_names_about_fourteen_hundred_pictures(font):
    emoji = emoji_data.named_emoji(font)
    assert 1300 <= len(emoji) <= 1500
    names = {item.name for item in emoji}
    assert {"rocket", "slice of pizza", "cat face", "sunflower", "hot beverage"} <= names
    assert all(name == name.lower() for name in names)


def test_captions_read_as_english():
    rocket, pizza, men = (emoji_data.Emoji(0, name) for name in ("rocket", "slice of pizza", "two men holding hands"))
    assert [emoji_data.caption(rocket, "blue", turn) for turn in range(3)] == [
        "a rocket on a blue background", "a picture of a rocket", "rocket"]
    assert emoji_data.caption(pizza, "red") == "a slice of pizza on a red background"
    assert emoji_data.caption(pizza, "orange") == "a slice of pizza on an orange background"
    assert emoji_data.caption(men, "red") == "two men holding hands on a red background"
    assert emoji_data.with_article("apple") == "an apple" and emoji_data.with_article("unicorn face") == "a unicorn face"
    assert emoji_data.with_article("scissors") == "scissors" and emoji_data.with_article("octopus") == "an octopus"


def test_the_held_out_pairs_are_fixed_and_an_eighth():
    rocket = emoji_data.Emoji(0x1F680, "rocket")
    held = [background for background in emoji_data.PALETTE if emoji_data.held_out(rocket, background)]
    assert held == [b for b in emoji_data.PALETTE if emoji_data.held_out(emoji_data.Emoji(0x1F680, "x"), b)]
    pairs = [(cp, b) for cp in range(0x1F300, 0x1F700) for b in emoji_data.PALETTE]
    share = sum(emoji_data.held_out(emoji_data.Emoji(cp, ""), b) for cp, b in pairs) / len(pairs)
    assert 0.1 < share < 0.15


@needs_font
def test_data_emoji_writes_disjoint_splits_with_labels(tmp_path, capsys, monkeypatch):
    real = emoji_data.named_emoji
    monkeypatch.setattr(emoji_data, "named_emoji", lambda font: real(font)[100:106])  # six emoji, quickly
    assert main(["data", "emoji", str(tmp_path / "emoji"), "--per-pair", "2"]) == 0
    labels = list(csv.DictReader(io.StringIO((tmp_path / "emoji" / "labels.csv").read_text())))
    train = {(row["code_point"], row["background"]) for row in labels if row["split"] == "train"}
    held = {(row["code_point"], row["background"]) for row in labels if row["split"] == "held-out"}
    assert len(train) + len(held) == 6 * 8 and not train & held  # every pair once, in one split only
    assert sum(row["split"] == "train" for row in labels) == 2 * len(train)
    printed = capsys.readouterr().out
    assert f"{len(labels) - len(held)} training and {len(held)} held-out images" in printed and "6 emoji" in printed
    from PIL import Image

    first = labels[0]
    image = Image.open(tmp_path / "emoji" / first["file"])
    assert image.size == (64, 64) and image.mode == "RGB"
    corner = image.getpixel((0, 0))
    colours = [emoji_data.PALETTE[first["background"]]]
    assert corner in colours or image.getpixel((63, 63)) in colours  # the drawing leaves a corner bare
    caption = (tmp_path / "emoji" / first["file"].replace(".png", ".txt")).read_text().strip()
    assert caption == f"{emoji_data.with_article(first['name'])} on a {first['background']} background"


def test_no_font_and_a_bad_font_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(emoji_data, "FONT_PATHS", (str(tmp_path / "none.ttf"),))
    with pytest.raises(UserError, match="install Debian's fonts-noto-color-emoji"):
        emoji_data.find_font()
    (tmp_path / "bad.ttf").write_bytes(b"not a font")
    assert main(["data", "emoji", str(tmp_path / "out"), "--font", str(tmp_path / "bad.ttf")]) == 2
    assert capsys.readouterr().err == (f"vqclip: error: --font {tmp_path / 'bad.ttf'} is not a font Pillow can draw "
                                       "colour emoji from (a CBDT or COLR TrueType font)\n")
    assert main(["data", "emoji", str(tmp_path / "out"), "--font", str(tmp_path / "gone.ttf")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@needs_font
def test_the_judge_reads_real_renders_and_their_background(font):
    from vqclip.emoji.judge import Judge, ceiling

    emoji = emoji_data.named_emoji(font)[::25]  # 56 emoji spread over the font
    judge = Judge(font, emoji)
    pairs = [(item, background) for index, item in enumerate(emoji)
             for background in list(emoji_data.PALETTE)[index % 8:index % 8 + 1]]
    clean = ceiling(judge, pairs, blur=0.0, scale=1.0)
    assert clean["top1"] >= 0.95 and clean["background"] == 1.0, clean
    blurred = ceiling(judge, pairs, blur=1.5, scale=0.5)
    assert blurred["top5"] >= blurred["top1"] >= 0.75 and blurred["top1"] <= clean["top1"], blurred
    from PIL import Image

    verdict = judge(Image.new("RGB", (64, 64), emoji_data.PALETTE["green"]))  # nothing drawn
    assert verdict.background == "green" and verdict.ranking == [] and judge.rank_of(verdict, emoji[0]) is None


@needs_font
def test_emoji_eval_runs_on_a_tiny_sample(tmp_path, capsys):
    """Any preset can be graded (the shapes world's here, one step): the figures are poor, the report whole."""
    import json

    out = tmp_path / "eval"
    assert main(["emoji", "eval", "--preset", "shapes", "--pairs", "2", "--prior-samples", "2", "--out", str(out),
                 "steps=1", "cutn=2", "init.prior_candidates=1"]) == 0
    report = json.loads((out / "eval.json").read_text())
    summary = report["summary"]
    assert summary["images"] == summary["pairs"] == summary["emoji"] == 2 and 0 <= summary["top1"] <= summary["top5"] <= 1
    reconstruction = report["reconstruction"]  # the shapes VQGAN rebuilding emoji: poorly, but measured
    assert reconstruction["images"] == 2 and 5 < reconstruction["psnr_db"] < 40
    assert report["clip"]["choices"] == len(emoji_data.named_emoji(emoji_data.find_font())) and report["clip"]["images"] == 2
    assert report["prior"]["samples_per_prompt"] == 2 and report["ceiling"]["images"] == 2
    rows = report["rows"]
    assert rows[0]["prompt"].endswith("background") and Path(rows[0]["image"]).is_file()
    printed = capsys.readouterr().out
    assert "generation: the emoji first" in printed and "the judge on the VQGAN's reconstructions" in printed
    assert main(["emoji", "eval", "--pairs", "0"]) == 2


@needs_font
def test_a_vqgan_that_keeps_everything_reaches_the_judges_own_ceiling():
    """vqgan_ceiling through an identity 'VQGAN' is the judge on the renders themselves."""
    import torch

    from vqclip.emoji.evaluate import held_out_pairs, vqgan_ceiling
    from vqclip.emoji.judge import ceiling, shared_judge

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def encode(self, images):
            return images

        quantize = decode = encode

    pairs = held_out_pairs(6)
    kept = vqgan_ceiling(Identity(), pairs)
    assert kept["psnr_db"] == 100.0 and kept["images"] == 6
    clean = ceiling(shared_judge(), pairs, blur=0.0, scale=1.0)
    assert (kept["top1"], kept["top5"], kept["background_ok"]) == (clean["top1"], clean["top5"], clean["background"])
