"""The general recipes (`vqclip train vqgan|clip|prior|all`) on tiny captioned folders: a few steps
run, the outputs load through the public loaders, resume is bit-exact, fine-tuning keeps the
architecture and codebook, and `train all` on `vqclip data digits` writes a preset that generates.
bf16 is off where values are pinned: whether it is used depends on the CPU."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
import torch
from PIL import Image, ImageDraw

from vqclip.cli import main
from vqclip.errors import UserError
from vqclip.train import clip as clip_recipe
from vqclip.train import vqgan as vqgan_recipe
from vqclip.train.settings import build_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    """24 captioned 32 px images: a red, green or blue square or circle on black, at a few places."""
    folder = tmp_path_factory.mktemp("captioned")
    index = 0
    for colour, rgb in COLOURS.items():
        for shape in ("square", "circle"):
            for offset in range(4):
                image = Image.new("RGB", (32, 32))
                box = (4 + 2 * offset, 6 + offset, 22 + 2 * offset, 24 + offset)
                (ImageDraw.Draw(image).rectangle if shape == "square" else ImageDraw.Draw(image).ellipse)(box, rgb)
                image.save(folder / f"{index:02d}.png")
                (folder / f"{index:02d}.txt").write_text(f"a {colour} {shape}")
                index += 1
    return folder


def tiny_vqgan(**changes) -> vqgan_recipe.VQGANTrainConfig:
    config = vqgan_recipe.VQGANTrainConfig(steps=6, batch_size=4, n_embed=32, embed_dim=8, z_channels=8, ch=32,
                                           disc_start=2, disc_layers=1, disc_ch=8, restart_every=3,
                                           sample_every=3, checkpoint_every=2, held_out=4, bf16=False)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def tiny_clip(**changes) -> clip_recipe.ClipTrainConfig:
    config = clip_recipe.ClipTrainConfig(steps=6, batch_size=8, width=8, embed_dim=16, text_width=32, text_layers=1,
                                         context_length=8, eval_every=3, checkpoint_every=2, held_out=6, bf16=False)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def same_weights(a, b) -> bool:
    a = torch.load(a / "train_state.pt", weights_only=True)
    b = torch.load(b / "train_state.pt", weights_only=True)
    return all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]) and a["step"] == b["step"]


def kill_at_call(monkeypatch, module, name: str, call: int):
    """Make module.name raise KeyboardInterrupt on its `call`-th use: a process killed mid-step."""
    real, calls = getattr(module, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)
    return lambda: monkeypatch.setattr(module, name, real)


# -- VQGAN ---------------------------------------------------------------------------------------
def test_vqgan_recipe_trains_and_loads_through_the_public_loaders(shapes_folder, tmp_path):
    from vqclip.models.registry import load_vqgan_from_config

    out = tmp_path / "vqgan"
    metrics = vqgan_recipe.train(shapes_folder, out, tiny_vqgan(), progress=False)
    assert metrics["images"] == 20 and metrics["held_out"]["images"] == 4 and metrics["skipped"] == 0
    assert [h["step"] for h in metrics["history"]] == [3, 6]
    assert metrics["psnr_db"] == pytest.approx(7.67, abs=0.05)  # pinned: seed 0, fp32
    assert metrics["codebook_size"] == 32 and 1 <= metrics["codebook_used"] <= 32
    assert json.loads((out / "vqgan-metrics.json").read_text())["psnr_db"] == metrics["psnr_db"]
    vqgan = load_vqgan_from_config({"config": str(out / "vqgan.yaml"), "checkpoint": str(out / "vqgan.safetensors")})
    assert vqgan.factor == 4 and vqgan.n_embed == 32
    assert vqgan.decode(vqgan.quantize(vqgan.encode(torch.rand(1, 3, 32, 32)))).shape == (1, 3, 32, 32)
    assert Image.open(out / "samples" / "step-000006.png").size == (4 * 34 - 2, 2 * 34 - 2)  # 4 held-out, 2 rows


def test_vqgan_resume_after_a_kill_is_bit_exact(shapes_folder, tmp_path, monkeypatch):
    vqgan_recipe.train(shapes_folder, tmp_path / "straight", tiny_vqgan(), progress=False)
    restore = kill_at_call(monkeypatch, vqgan_recipe, "random_crops", 4)  # during step 4: the checkpoint is step 2's
    with pytest.raises(KeyboardInterrupt):
        vqgan_recipe.train(shapes_folder, tmp_path / "stopped", tiny_vqgan(), progress=False)
    restore()
    assert torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)["step"] == 2
    vqgan_recipe.train(shapes_folder, tmp_path / "stopped", tiny_vqgan(), resume=True, progress=False)
    assert same_weights(tmp_path / "straight", tmp_path / "stopped")
    a = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)["discriminator"]
    b = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)["discriminator"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="lr=0.5 differs from lr=0.001 stored in"):
        vqgan_recipe.train(shapes_folder, tmp_path / "stopped", tiny_vqgan(lr=0.5), resume=True, progress=False)


@pytest.mark.parametrize("recipe, first, changed", [
    ("vqgan", ["n_embed=16", "embed_dim=8", "z_channels=8", "ch=32"], "ch=64"),
    ("clip", ["width=8", "embed_dim=16", "text_width=32", "text_layers=1", "context_length=8"], "width=16"),
])
def test_resume_with_another_architecture_names_the_setting(shapes_folder, tmp_path, capsys, recipe, first, changed):
    args = ["train", recipe, str(shapes_folder), "--out", str(tmp_path / "out"), "--steps", "1", "--size", "32",
            "--quiet", "batch_size=4", "held_out=4", "checkpoint_every=1", "bf16=false", *first]
    assert main(args) == 0
    before = (tmp_path / "out" / "train_state.pt").read_bytes()
    capsys.readouterr()
    assert main([*args, "--resume", changed]) == 2  # a one-line error, not a failure inside load_state_dict
    key, value = changed.split("=")
    stored = next(item for item in first if item.startswith(key + "=")).split("=")[1]
    assert f"{key}={value} differs from {key}={stored} stored in" in capsys.readouterr().err
    assert (tmp_path / "out" / "train_state.pt").read_bytes() == before


def test_the_discriminator_changes_the_result_only_after_it_joins(shapes_folder, tmp_path):
    vqgan_recipe.train(shapes_folder, tmp_path / "late", tiny_vqgan(steps=2, disc_start=2), progress=False)
    vqgan_recipe.train(shapes_folder, tmp_path / "never", tiny_vqgan(steps=2, disc_start=-1), progress=False)
    vqgan_recipe.train(shapes_folder, tmp_path / "early", tiny_vqgan(steps=2, disc_start=0), progress=False)
    assert same_weights(tmp_path / "late", tmp_path / "never")
    assert not same_weights(tmp_path / "early", tmp_path / "never")
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    assert vqgan_recipe.hinge_d_loss(real, fake).item() == pytest.approx(0.5)  # 0.5 · (0.5 + 0.5)
    layer = torch.nn.Parameter(torch.ones(3))
    weight = vqgan_recipe.adaptive_weight((3 * layer).sum(), (0.5 * layer).sum(), layer)
    assert weight.item() == pytest.approx(6.0, rel=1e-3)  # |∇ recon| / |∇ adversarial|


def test_fine_tuning_keeps_the_architecture_and_codebook(shapes_folder, tmp_path):
    from vqclip.models.vqgan import read_taming_config

    # the shipped shapes VQGAN by name (64 px, 512 codes): fine-tuned on 32 px images
    metrics = vqgan_recipe.train(shapes_folder, tmp_path / "tuned", tiny_vqgan(base="shapes", steps=2, lr=1e-4),
                                 progress=False)
    assert metrics["codebook_size"] == 512
    tuned = read_taming_config(tmp_path / "tuned" / "vqgan.yaml")
    from vqclip.models.registry import fetch_vqgan

    shipped = read_taming_config(fetch_vqgan("shapes")[0])
    assert tuned == shipped  # ddconfig, n_embed, embed_dim: all kept (not the from-scratch settings)
    # and again from the folder just written, through the command line
    assert main(["train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "again"), "--from",
                 str(tmp_path / "tuned"), "--steps", "1", "--quiet", "bf16=false", "held_out=4",
                 "disc_start=-1"]) == 0
    assert read_taming_config(tmp_path / "again" / "vqgan.yaml") == shipped
    assert main(["train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "x"), "--from", "nowhere"]) == 2


# -- CLIP ----------------------------------------------------------------------------------------
def test_clip_recipe_trains_loads_and_resumes_bit_exact(shapes_folder, tmp_path, monkeypatch):
    from vqclip.models.clip import load_clip

    out = tmp_path / "straight"
    metrics = clip_recipe.train(shapes_folder, out, tiny_clip(), progress=False)
    assert metrics["choices"] == 6 and metrics["held_out"]["images"] == 4
    assert [h["step"] for h in metrics["history"]] == [3, 6]
    assert metrics["history"][-1]["loss"] == pytest.approx(3.7449, abs=2e-3)  # pinned: seed 0, fp32
    clip = load_clip({"name": str(out / "clip.json"), "pretrained": str(out / "clip.safetensors")})
    assert clip.input_size == 32 and clip.embed_dim == 16
    restore = kill_at_call(monkeypatch, clip_recipe, "augment", 5)
    with pytest.raises(KeyboardInterrupt):
        clip_recipe.train(shapes_folder, tmp_path / "stopped", tiny_clip(), progress=False)
    restore()
    clip_recipe.train(shapes_folder, tmp_path / "stopped", tiny_clip(), resume=True, progress=False)
    assert same_weights(out, tmp_path / "stopped")


def test_clip_fine_tunes_from_a_checkpoint_file(shapes_folder, tmp_path):
    first = tmp_path / "first"
    clip_recipe.train(shapes_folder, first, tiny_clip(steps=1), progress=False)
    tuned = clip_recipe.train(shapes_folder, tmp_path / "tuned", tiny_clip(steps=1, base=str(first / "clip.safetensors"),
                                                                           lr=1e-6), progress=False)
    fresh = clip_recipe.train(shapes_folder, tmp_path / "fresh", tiny_clip(steps=1, seed=1), progress=False)
    start = torch.load(first / "train_state.pt", weights_only=True)["model"]["logit_scale"]
    after = torch.load(tmp_path / "tuned" / "train_state.pt", weights_only=True)["model"]["logit_scale"]
    assert torch.allclose(start, after, atol=1e-3)  # started from the file's weights, moved a hair
    assert tuned["zero_shot_accuracy"] >= 0 and fresh["zero_shot_accuracy"] >= 0
    with pytest.raises(UserError, match="does not fit"):
        clip_recipe.train(shapes_folder, tmp_path / "x", tiny_clip(base=str(first / "clip.safetensors"), embed_dim=32),
                          progress=False)


def test_the_duplicate_captions_are_matches_not_negatives():
    targets = clip_recipe.match_matrix(["a", "b", "a"])
    assert targets.tolist() == [[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]]
    features = torch.eye(3)
    distinct = clip_recipe.contrastive_loss(features, features, torch.tensor(10.0), ["a", "b", "c"])
    expected = torch.nn.functional.cross_entropy(10 * torch.eye(3), torch.arange(3))
    assert distinct.item() == pytest.approx(expected.item())  # all captions distinct: CLIP's loss


# -- the command line: prior, all, errors -----------------------------------------------------------
def test_train_prior_from_the_command_line(shapes_folder, tmp_path, capsys):
    from vqclip.prior.weights import load_prior

    vqgan_recipe.train(shapes_folder, tmp_path / "vqgan", tiny_vqgan(steps=2), progress=False)
    args = ["train", "prior", str(shapes_folder), "--vqgan", str(tmp_path / "vqgan"), "--out", str(tmp_path / "prior"),
            "--steps", "4", "--quiet", "width=32", "heads=2", "glu=64", "eval_items=4", "batch_size=4",
            "eval_every=2", "checkpoint_every=2"]
    assert main(args) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["images"] == 20 and printed["held_out"]["images"] == 4 and "history" not in printed
    prior = load_prior(tmp_path / "prior")
    assert prior.model.config.grid == [8, 8] and prior.model.config.codebook_size == 32
    for step in (2, 4):  # every eval_every steps: a row of 6 samples for each of 4 held-out captions
        assert Image.open(tmp_path / "prior" / "samples" / f"step-{step:06d}.png").size == (6 * 34 - 2, 4 * 34 - 2)
    assert main(args + ["--resume"]) == 0  # finished: nothing encoded or trained again


@pytest.mark.parametrize("argv, message", [
    (["train", "vqgan", "{data}", "--out", "{out}", "n_embeds=3"], "unknown config key 'n_embeds' in settings (did you mean: n_embed"),
    (["train", "vqgan", "{data}", "--out", "{out}", "ch=48"], "multiple of 32"),
    (["train", "vqgan", "{data}", "--out", "{out}", "--size", "30"], "multiple of the VQGAN's factor 4"),
    (["train", "vqgan", "{data}", "--out", "{out}", "--from", "shapes", "crop=18"], "crop=18 must be a multiple"),
    (["train", "vqgan", "{data}", "--out", "{out}", "crop=64"], "must not exceed"),
    (["train", "clip", "{data}", "--out", "{out}", "--size", "48"], "multiple of 32"),
    (["train", "clip", "{data}", "--out", "{out}", "model=ViT-Q-99"], "unknown CLIP architecture"),
    (["train", "prior", "{data}", "--out", "{out}"], "needs --vqgan"),
    (["train", "prior", "{data}", "--out", "{out}", "--from", "shapes"], "not --from"),
    (["train", "vqgan", "{data}", "--out", "{out}", "--vqgan", "shapes"], "not --vqgan"),
    (["train", "clip", "{data}", "--out", "{out}", "recon_fraction=0.1"], "needs --vqgan"),
    (["train", "all", "{data}", "--out", "{out}", "--from", "shapes"], "vqgan.base"),
    (["train", "vqgan", "{empty}", "--out", "{out}"], "no images"),
    (["train", "vqgan", "{data}", "--out", "{out}", "--steps", "0"], "at least 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(shapes_folder, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    values = {"data": str(shapes_folder), "out": str(tmp_path / "out"), "empty": str(tmp_path / "empty")}
    assert main([a.format(**values) for a in argv] + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unreadable_images_are_skipped_warned_and_counted(shapes_folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shapes_folder, data)
    (data / "99.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    (data / "99.txt").write_text("a broken file")
    assert main(["train", "clip", str(data), "--out", str(tmp_path / "clip"), "--steps", "1", "--quiet",
                 "width=8", "embed_dim=16", "text_width=32", "text_layers=1", "held_out=4", "batch_size=4"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 unreadable image(s)" in err and "99.png" in err
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["skipped"] == 1 and printed["images"] == 20  # 24 readable, 4 held out


def test_the_recipes_read_every_layout(shapes_folder, tmp_path, capsys):
    classes = tmp_path / "classes"  # the same images as class sub-folders, and as a CSV list
    rows = ["image,caption"]
    for image in sorted(shapes_folder.glob("*.png")):
        caption = image.with_suffix(".txt").read_text()
        (classes / caption.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, classes / caption.replace(" ", "_") / image.name)
        rows.append(f"{image},{caption}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    tiny = ["--steps", "1", "--quiet", "width=8", "embed_dim=16", "text_width=32", "text_layers=1", "held_out=4",
            "batch_size=4"]
    assert main(["train", "clip", str(classes), "--template", "{} drawn", "--out", str(tmp_path / "a"), *tiny]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["choices"] == 6
    history = json.loads((tmp_path / "a" / "clip-metrics.json").read_text())["history"]
    assert len(history) == 1
    assert main(["train", "clip", str(tmp_path / "list.csv"), "--out", str(tmp_path / "b"), *tiny]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["images"] == 20 and printed["choices"] == 6


def test_train_all_settings_go_to_their_recipe(tmp_path):
    config = build_config("all", tmp_path, ["vqgan.n_embed=64", "clip.steps=7", "prior.width=64", "steps=12"],
                          steps=None, size=None, seed=3, base=None)
    assert (config.vqgan.n_embed, config.clip.steps, config.prior.width, config.steps) == (64, 7, 64, 12)
    assert config.vqgan.seed == config.clip.seed == config.prior.seed == 3
    assert config.clip.size == config.vqgan.size
    # the parts nobody set keep train all's own defaults (its smaller prior), not the lone recipe's
    assert (config.prior.decoder_layers, config.prior.encoder_layers, config.prior.eval_items) == (3, 1, 64)


def test_train_all_on_the_digits_writes_a_preset_that_generates(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="vqclip data digits needs scikit-learn (pip install 'vqclip[digits]')")
    assert main(["data", "digits", str(tmp_path / "digits")]) == 0
    subset = tmp_path / "subset"  # the first 60 training digits: enough to run every step of every recipe
    subset.mkdir()
    for path in sorted((tmp_path / "digits" / "train").iterdir())[:120]:
        shutil.copy(path, subset / path.name)
    out = tmp_path / "model"
    assert main(["train", "all", str(subset), "--out", str(out), "--steps", "3", "--quiet",
                 "vqgan.n_embed=32", "vqgan.embed_dim=8", "vqgan.z_channels=8", "vqgan.ch=32", "vqgan.batch_size=4",
                 "vqgan.disc_start=1", "vqgan.disc_ch=8", "clip.batch_size=8", "clip.width=8", "clip.embed_dim=16",
                 "prior.width=32", "prior.heads=2", "prior.glu=64", "prior.eval_items=4", "prior.batch_size=4",
                 "steps=2"]) == 0, capsys.readouterr().err
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) == {"vqgan", "clip", "prior"} and metrics["clip"]["choices"] == 33  # distinct captions among 60 digits
    run = tmp_path / "run"
    assert main(["the digit 7", "--preset", str(out / "preset.yaml"), "--run-dir", str(run), "--quiet"]) == 0
    assert Image.open(run / "final.png").size == (32, 32)
    assert main(["train", "all", str(subset), "--out", str(out), "--steps", "3", "--quiet", "--resume",
                 "vqgan.n_embed=32", "vqgan.embed_dim=8", "vqgan.z_channels=8", "vqgan.ch=32", "vqgan.batch_size=4",
                 "vqgan.disc_start=1", "vqgan.disc_ch=8", "clip.batch_size=8", "clip.width=8", "clip.embed_dim=16",
                 "prior.width=32", "prior.heads=2", "prior.glu=64", "prior.eval_items=4", "prior.batch_size=4",
                 "steps=2"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == {"prior"}  # the others were done


# -- Ctrl-C and the thread policy ------------------------------------------------------------------
def signal_at_call(monkeypatch, module, name: str, call: int):
    """Make module.name deliver SIGINT to this process on its `call`-th use: Ctrl-C in the middle of a step."""
    import signal

    real, calls = getattr(module, name), []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupting)
    return lambda: monkeypatch.setattr(module, name, real)


TINY = {"vqgan": ["batch_size=4", "n_embed=32", "embed_dim=8", "z_channels=8", "disc_start=2", "disc_layers=1",
                  "disc_ch=8", "restart_every=3", "sample_every=3", "held_out=4"],
        "clip": ["batch_size=8", "width=8", "embed_dim=16", "text_width=32", "text_layers=1", "context_length=8",
                 "eval_every=3", "held_out=6"],
        "prior": ["width=32", "heads=2", "glu=64", "eval_items=4", "batch_size=4", "eval_every=3"]}


@pytest.mark.parametrize("recipe, calls_per_step", [("vqgan", 1), ("clip", 2), ("prior", 2)])
def test_ctrl_c_saves_the_state_says_how_to_resume_and_resuming_is_bit_exact(shapes_folder, tmp_path, capsys,
                                                                             monkeypatch, recipe, calls_per_step):
    """Ctrl-C in step 3 of 6, long before the first periodic checkpoint: the step finishes, its state is
    written, the command to continue is printed (exit 130); that command ends on the weights of a run
    never stopped."""
    from vqclip.train import distributed

    extra = []
    if recipe == "prior":
        vqgan_recipe.train(shapes_folder, tmp_path / "vqgan", tiny_vqgan(steps=2), progress=False)
        extra = ["--vqgan", str(tmp_path / "vqgan")]

    def argv(out: str) -> list[str]:
        return ["train", recipe, str(shapes_folder), "--out", str(tmp_path / out), "--steps", "6", "--quiet",
                *extra, *TINY[recipe], "checkpoint_every=100", "bf16=false"]

    assert main(argv("straight")) == 0
    restore = signal_at_call(monkeypatch, distributed, "shard", 2 * calls_per_step + 1)  # during step 3
    capsys.readouterr()
    assert main(argv("stopped")) == 130
    restore()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training stopped by signal 2 after step 3 of 6" in err
    assert torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)["step"] == 3
    again = err.partition("continue with: vqclip ")[2]
    assert again.endswith("--resume")
    assert main(shlex.split(again)) == 0
    assert same_weights(tmp_path / "straight", tmp_path / "stopped")


def test_training_takes_the_thread_policy(shapes_folder, tmp_path, capsys, monkeypatch):
    """--threads N and threads=N set torch's count for the run (restored after); a bad count is one line."""
    from vqclip.train import settings

    seen, before = [], torch.get_num_threads()
    monkeypatch.setattr(settings, "run", lambda *args, **kwargs: seen.append(torch.get_num_threads()) or {})
    base = ["train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*base, "--threads", "1"]) == 0 and main([*base, "threads=1"]) == 0
    assert seen == [1, 1] and torch.get_num_threads() == before
    capsys.readouterr()
    assert main([*base, "threads=0"]) == 2
    assert "threads=0 must be a whole number of at least 1" in capsys.readouterr().err
