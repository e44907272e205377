"""The shipped digits world: the judge reads real digits, the weights fit their budget and load by
name, the `digits` preset draws a 7 with these pixels, `vqclip digits eval` grades what it draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="the digit judge needs scikit-learn (pip install 'vqclip[digits]')")

from vqclip.cli import main  # noqa: E402
from vqclip.digits import judge  # noqa: E402
from vqclip.digits.data import load_digits, picture  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "vqclip" / "digits" / "weights"


def test_the_judge_reads_the_data_back_as_it_was_made():
    images, digits = load_digits()
    held_out = judge.held_out_mask(len(images))
    # a held-out digit, as `vqclip data digits` writes it (32 px RGB), read back: the classifier's own data
    pictures = [picture(pixels) for pixels in images[held_out]]
    assert judge.judge(pictures) == [d for d, keep in zip(digits, held_out) if keep]
    levels = np.stack([judge.to_levels(p) for p in pictures[:50]])
    assert levels.min() >= 0 and levels.max() <= 16 and np.all(levels == levels.round())
    assert np.abs(levels - images[held_out][:50]).mean() < 1.0  # bicubic up then box down: under a level
    # on the 1,438 training digits it never saw
    assert judge.accuracy_on_the_data() == {"train_split_accuracy": 0.9666, "images": 1438}
    assert judge.judge([]) == []


def test_shipped_weights_fit_the_budget_and_load_by_name():
    from vqclip.models.clip import load_clip_ensemble
    from vqclip.models.registry import load_vqgan_from_config, resolve_clip
    from vqclip.prior.weights import load_prior

    assert sum(path.stat().st_size for path in WEIGHTS.iterdir()) <= 10e6
    metrics = {name: json.loads((WEIGHTS / f"{name}-metrics.json").read_text()) for name in ("vqgan", "clip", "prior")}
    assert metrics["vqgan"]["psnr_db"] == 38.48 and metrics["vqgan"]["codebook_used"] == 121
    vqgan = load_vqgan_from_config({"name": "digits"}, progress=False)
    assert vqgan.n_embed == 128 and vqgan.factor == 4
    prior = load_prior("digits")
    assert prior.model.config.grid == [8, 8] and prior.info["vqgan"]["name"] == "digits"
    clip = load_clip_ensemble([resolve_clip({"name": "digits", "weight": 1.0})])
    assert clip.members[0].input_size == 32


def test_the_digits_preset_draws_a_seven_with_these_pixels(tmp_path):
    import vqclip

    result = vqclip.generate("the digit 7", preset="digits", seed=0, quiet=True, run_dir=str(tmp_path))
    assert result.images.shape == (1, 3, 32, 32) and judge.judge(result.images) == [7]
    expected = torch.tensor([[0.6827, 0.8852, 0.9664, 0.9688],
                             [0.6856, 0.8707, 0.9626, 0.9963],
                             [0.7231, 0.8837, 0.9705, 1.0000],
                             [0.8032, 0.9240, 0.9851, 1.0000]])
    assert torch.allclose(result.images[0, 0, 12:16, 12:16], expected, atol=2e-3)
    assert (tmp_path / "final.png").is_file()


def test_digits_eval_on_the_shipped_weights(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["digits", "eval", "--digits", "3,7", "--seeds", "2", "--prior-samples", "4", "--out", str(out),
                 "steps=5"]) == 0
    printed = capsys.readouterr().out
    assert "generation judged right" in printed and "CLIP zero-shot on 359 held-out digits: 96.9%" in printed
    report = json.loads((out / "eval.json").read_text())
    assert [(row["digit"], row["seed"], row["judged"]) for row in report["rows"]] == [
        (3, 0, 3), (3, 1, 3), (7, 0, 7), (7, 1, 7)]
    assert report["summary"]["accuracy"] == 1.0 and report["summary"]["per_digit"] == {"3": 1.0, "7": 1.0}
    assert report["clip"] == {"zero_shot_accuracy": 0.9694, "images": 359}
    assert report["prior"]["best_of_n_accuracy"] == 1.0 and report["prior"]["samples_per_digit"] == 4


@pytest.mark.parametrize("args, message", [
    (["--digits", "3,12"], "--digits takes digits 0 to 9"),
    (["--digits", "seven"], "--digits takes digits 0 to 9"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--prior-samples", "-1"], "--prior-samples must be at least 0"),
])
def test_digits_eval_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["digits", "eval", "--out", str(tmp_path / "eval"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_the_digits_preset_meets_the_target(tmp_path):
    """10 digits × 3 seeds, judged (docs/training.md: 97 % over 10 seeds, 100 % over these 3)."""
    from vqclip.digits import evaluate

    report = evaluate.evaluate(3, out=tmp_path, prior_samples=8)
    assert report["summary"]["accuracy"] >= 0.9  # its seconds per image are a figure (docs), never a test
    assert report["prior"]["samples_accuracy"] >= 0.9 and report["prior"]["best_of_n_accuracy"] >= 0.9


def test_digits_eval_without_scikit_learn_is_one_line_and_draws_nothing(tmp_path, capsys, request):
    judge.classifier.cache_clear()  # before imports fail: a fitted judge would not need scikit-learn
    request.getfixturevalue("without_sklearn")
    assert main(["digits", "eval", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'vqclip[digits]'" in err and len(err.strip().splitlines()) == 1
    assert "vqclip data digits" not in err  # the user ran `vqclip digits eval`: no other command is named
    assert not (tmp_path / "eval").exists()


def test_clip_zero_shot_encodes_each_held_out_digit_once(monkeypatch):
    """The 359 images are embedded once and compared with the ten prompts (not once per prompt), and
    the figure is what scoring them prompt by prompt gave."""
    from vqclip.digits import evaluate
    from vqclip.models import clip as clip_module
    from vqclip.models.registry import resolve_clip

    clip = clip_module.load_clip_ensemble([resolve_clip({"name": "digits", "weight": 1.0})])
    encoded = []
    real_encode = clip_module.ClipModel.encode_image
    monkeypatch.setattr(clip_module.ClipModel, "encode_image",
                        lambda self, images: encoded.append(len(images)) or real_encode(self, images))
    assert evaluate.clip_zero_shot(clip) == {"zero_shot_accuracy": 0.9694, "images": 359}
    assert sum(encoded) == 359 and len(encoded) == 6  # once each, 64 at a time (it was 3,590 in 60 calls)

    images, _ = load_digits()
    pixels = torch.stack([torch.from_numpy(np.asarray(picture(p), dtype=np.float32) / 255).permute(2, 0, 1)
                          for p in images[:5]])
    table = clip_module.clip_score_table(clip, pixels, evaluate.prompts())
    one_by_one = torch.stack([clip_module.clip_scores(clip, pixels, [(1.0, [e[0] for e in clip.encode_text([text])])])
                              for text in evaluate.prompts()], dim=1)
    assert table.shape == (5, 10) and torch.allclose(table, one_by_one, atol=1e-5)
    assert table.argmax(1).tolist() == [0, 1, 2, 3, 4]  # scikit-learn's first five digits are 0 to 4


def test_digits_eval_says_its_thread_count_once_and_where_the_time_went(tmp_path, monkeypatch, caplog, capsys):
    from vqclip.machine import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    out = tmp_path / "eval"
    with caplog.at_level("WARNING", logger="vqclip.machine.threads"):
        assert main(["digits", "eval", "--digits", "3,7", "--out", str(out), "steps=2", "threads=1"]) == 0
    warnings = [record.getMessage() for record in caplog.records if record.name == "vqclip.machine.threads"]
    assert len(warnings) == 1 and warnings[0].startswith("threads=1: 1 thread(s) where this machine's default is 2")
    assert "threads: 1" in (out / "digit7-seed0" / "config.yaml").read_text()  # every run used the one plan
    summary = json.loads((out / "eval.json").read_text())["summary"]
    seconds = summary["seconds"]
    assert list(seconds) == ["total", "loading", "generation", "judging", "clip_zero_shot", "prior"]
    assert seconds["prior"] == 0 and all(seconds[part] > 0 for part in ("loading", "generation", "clip_zero_shot"))
    assert sum(seconds.values()) - seconds["total"] <= seconds["total"] + 0.05  # the parts fit in the total
    assert summary["seconds_per_image"] == pytest.approx(seconds["generation"] / 2, abs=0.006)  # both rounded
    printed = capsys.readouterr().out
    assert f"{seconds['total']:.1f} s after start-up: loading {seconds['loading']:.1f} s, generation " in printed
