"""The prior in use: init.mode=prior end to end, the `vqclip prior` commands, min-dalle's file layout,
and the shapes recipe's smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vqclip.cli import main
from vqclip.config import build_config
from vqclip.errors import UserError
from vqclip.generation import generate
from vqclip.prior.weights import load_prior
from vqclip.train.prior import PriorTrainConfig as TrainConfig
from vqclip.train.prior import fit as train

TINY = dict(steps=4, batch_size=4, lr=1e-2, warmup=1, eval_every=4, eval_items=8, checkpoint_every=4,
            width=32, heads=2, glu=48, encoder_layers=1, decoder_layers=1, text_length=16, bf16=False)


@pytest.fixture(scope="module")
def tiny_prior_dir(tmp_path_factory):
    """A tiny prior trained for a few steps on 40 encoded shapes-world images."""
    from vqclip.models.registry import load_vqgan_from_config
    from vqclip.shapes.data import prior_tokens

    folder = tmp_path_factory.mktemp("tiny-prior")
    vqgan = load_vqgan_from_config({"name": "shapes"}, progress=False)
    description = {"vqgan": "shapes", "size": 64, "codebook_size": 512, "factor": 4}
    data = prior_tokens(folder / "data.pt", vqgan, description, 40, 0, "train", resume=False, progress=False)
    train(data, folder, TrainConfig(**TINY), progress=False)
    return folder


def seed_drawn_from(seed: int) -> int:
    """The seed a run (seeded with `seed`) hands the prior: the first draw from the run's generator."""
    return int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))


def assert_pixels_are_the_final_latent(result, vqgan) -> None:
    """The returned images are the run's final latent decoded, and final.png holds them (to 1/255)."""
    with torch.no_grad():
        torch.testing.assert_close(result.images, vqgan.decode(vqgan.quantize(result.z.to(vqgan.codebook.device))))
    saved = torch.from_numpy(np.array(Image.open(result.final_path).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(saved, (result.images[0].clamp(0, 1) * 255).round().to(torch.uint8))


def test_init_mode_prior_starts_from_the_best_sample(tmp_path, tiny_prior_dir, starting_z):
    from vqclip.loading import load_models
    from vqclip.prior.sample import prior_tokens
    from vqclip.start import initial_z

    config = build_config("shapes", {"prompts": ["a red circle on a blue background"], "quiet": True,
                                     "init": {"mode": "prior", "prior": str(tiny_prior_dir), "prior_candidates": 3}})
    models = load_models(config)
    assert models.prior is not None and models.prior.model.config.grid == [16, 16]
    z = initial_z(config.init, models.vqgan, (64, 64), 2, torch.Generator().manual_seed(7), models.device,
                  prior=models.prior, clip=models.clip, text="a red circle on a blue background")
    expected = prior_tokens(models.prior, models.vqgan, models.clip, "a red circle on a blue background",
                            (16, 16), 3, 2, seed_drawn_from(7))
    assert z.shape == (2, 64, 16, 16)
    assert torch.equal(models.vqgan.z_to_tokens(z), expected)  # codebook vectors of the ranked samples

    result = generate("a red circle on a blue background", preset="shapes", steps=2, seed=1, quiet=True,
                      run_dir=str(tmp_path / "run"), models=models,
                      init={"mode": "prior", "prior": str(tiny_prior_dir), "prior_candidates": 3})
    assert result.images.shape == (1, 3, 64, 64) and (tmp_path / "run" / "final.png").is_file()
    # the run starts from the prior's best sample for its own seed ...
    best = prior_tokens(models.prior, models.vqgan, models.clip, "a red circle on a blue background",
                        (16, 16), 3, 1, seed_drawn_from(1))
    assert torch.equal(models.vqgan.z_to_tokens(starting_z[0]), best)
    assert torch.equal(starting_z[0], models.vqgan.tokens_to_z(best))
    assert_pixels_are_the_final_latent(result, models.vqgan)


def test_init_mode_prior_errors(tmp_path, tiny_prior_dir):
    with pytest.raises(UserError, match="init.prior"):
        generate("a red circle", preset="shapes", steps=1, quiet=True, run_dir=str(tmp_path / "a"),
                        init={"mode": "prior", "prior": None})
    with pytest.raises(UserError, match="size must be 64 64"):
        generate("a red circle", preset="shapes", steps=1, quiet=True, size=[32, 32],
                        run_dir=str(tmp_path / "b"), init={"mode": "prior", "prior": str(tiny_prior_dir)})
    with pytest.raises(UserError, match="init.prior: no such folder .*, or a known prior: "):
        generate("a red circle", preset="shapes", steps=1, quiet=True, run_dir=str(tmp_path / "c"),
                        init={"mode": "prior", "prior": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match="text prompt"):
        generate(None, preset="shapes", steps=1, quiet=True, run_dir=str(tmp_path / "d"),
                        image_prompts=[], noise_prompts=["3:1"],
                        init={"mode": "prior", "prior": str(tiny_prior_dir)})


def test_random_init_still_works_on_the_shapes_preset(tmp_path, shapes_models, starting_z):
    result = generate("a red circle", preset="shapes", steps=2, seed=0, quiet=True, models=shapes_models,
                      run_dir=str(tmp_path / "run"), init={"mode": "random"})
    assert result.images.shape == (1, 3, 64, 64)
    vqgan = shapes_models.vqgan
    tokens = torch.randint(vqgan.n_embed, (1, 16, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(starting_z[0], vqgan.tokens_to_z(tokens))  # uniform codes from the run's seed, no prior
    assert_pixels_are_the_final_latent(result, vqgan)


def test_prior_commands_end_to_end(tmp_path, capsys):
    from vqclip.shapes import world

    images = tmp_path / "images"
    images.mkdir()
    rng = world.make_rng(3)
    for i in range(12):
        scene = world.sample_scene(rng)
        Image.fromarray(world.draw(scene)).save(images / f"{i:02d}.png")
        (images / f"{i:02d}.txt").write_text(world.caption(scene, rng))
    settings = [f"{k}={v}" for k, v in {**TINY, "eval_items": 4, "steps": 2}.items()]
    train = ["train", "prior", str(images), "--vqgan", "shapes", "--size", "64", "--quiet"]
    assert main([*train, "--out", str(tmp_path / "prior"), *settings]) == 0
    assert (tmp_path / "prior" / "data.pt").is_file() and (tmp_path / "prior" / "samples").is_dir()
    capsys.readouterr()
    assert main([*train, "--out", str(tmp_path / "p2"), "steps=abc"]) == 2
    assert "bad value for steps" in capsys.readouterr().err
    assert main(["prior", "build-data", str(images), "-o", str(tmp_path / "data.pt")]) == 2
    assert "vqclip train prior DATA --vqgan VQGAN --out DIR" in capsys.readouterr().err
    out = tmp_path / "samples" / "circle.png"
    assert main(["prior", "sample", "a red circle", "-o", str(out), "--prior", str(tmp_path / "prior"),
                 "-p", "shapes", "--num", "2", "--quiet", "--top-k", "50"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(out), str(out.with_name("circle-0.png")), str(out.with_name("circle-1.png"))]
    from vqclip.outputs import read_metadata

    assert read_metadata(out)["prompt"] == "a red circle" and read_metadata(out)["rank"] == 0
    assert main(["prior", "sample", "a red circle", "-o", str(out), "-p", "default", "--quiet"]) == 2  # no prior


def write_min_dalle_folder(min_dalle_models, folder, width: int = 128, image_vocab: int = 32):
    """encoder.pt / decoder.pt in fp16 (min-dalle's own modules, random weights) + vocab.json + merges.txt."""
    torch.manual_seed(0)
    encoder = min_dalle_models.DalleBartEncoder(layer_count=1, embed_count=width, attention_head_count=width // 64,
                                                text_vocab_count=30, text_token_count=64, glu_embed_count=64,
                                                device="cpu")
    decoder = min_dalle_models.DalleBartDecoder(image_vocab_count=image_vocab, embed_count=width,
                                                attention_head_count=width // 64, glu_embed_count=64,
                                                layer_count=1, device="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in encoder.state_dict().items()}, folder / "encoder.pt")
    torch.save({k: v.half() for k, v in decoder.state_dict().items()}, folder / "decoder.pt")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "Ġred": 4, "Ġcircle": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nĠ r\nĠr e\nĠre d\n")
    return encoder, decoder


def test_min_dalle_files_load_and_drive_the_dalle_mini_preset(tmp_path, min_dalle_models, write_tiny_vqgan,
                                                              write_tiny_clip, starting_z):
    from vqclip.generation import run
    from vqclip.loading import load_models
    from vqclip.prior.sample import prior_tokens

    encoder, _ = write_min_dalle_folder(min_dalle_models, tmp_path / "min-dalle")
    prior = load_prior(tmp_path / "min-dalle")
    config = prior.model.config
    assert (config.width, config.heads, config.image_vocab, config.grid, config.text_length) == (128, 2, 32, [16, 16], 64)
    assert prior.tokenizer.encode(["red circle"], 5)[0].tolist() == [0, 4, 3, 3, 2]  # "circle" has no merges here
    text = torch.tensor([[0, 4, 2] + [1] * 61] * 2)
    assert torch.allclose(prior.model.encoder(text), encoder.half().float()(text), atol=1e-4)

    vqgan_config, vqgan_checkpoint = write_tiny_vqgan(tmp_path)  # 32 codes, factor 2: 16×16 tokens at 32 px
    clip_config, clip_weights = write_tiny_clip(tmp_path)
    config = build_config("dalle-mini", {"size": [32, 32], "steps": 1, "cutn": 2, "quiet": True, "seed": 0,
                                         "run_dir": str(tmp_path / "run"), "prompts": ["red circle"],
                                         "vqgan": {"name": None, "format": "taming", "config": str(vqgan_config),
                                                   "checkpoint": str(vqgan_checkpoint)},
                                         "clip": {"models": [{"name": str(clip_config), "pretrained": str(clip_weights)}]},
                                         "init": {"prior": str(tmp_path / "min-dalle"), "prior_candidates": 2}})
    assert config.init.mode == "prior"
    models = load_models(config)
    result = run(config, models)
    assert result.images.shape == (1, 3, 32, 32)
    # the run starts from the better of the prior's 2 samples (by CLIP), drawn with the run's seed
    best = prior_tokens(models.prior, models.vqgan, models.clip, "red circle", (16, 16), 2, 1, seed_drawn_from(0))
    assert torch.equal(starting_z[0], models.vqgan.tokens_to_z(best))
    assert_pixels_are_the_final_latent(result, models.vqgan)


def test_shapes_world_prior_from_the_command_line(tmp_path, capsys):
    """`vqclip train prior shapes`: the world drawn on the fly, its flat codes merged, samples graded."""
    settings = [f"{k}={v}" for k, v in {**TINY, "steps": 2}.items()]
    assert main(["train", "prior", "shapes", "--out", str(tmp_path), "--quiet", "world_images=24", "eval_items=8",
                 "world_prompts=1", *settings]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["steps"] == 2 and set(metrics["samples"]) >= {"colour", "shape", "background"}
    stored = json.loads((tmp_path / "prior-metrics.json").read_text())["train"]
    assert stored["merge_flat_codes"] is True and stored["eval_items"] == 8  # the world's own setting, then ours
    assert load_prior(tmp_path).model.config.grid == [16, 16]


def test_shapes_eval_starts_from_the_shipped_prior(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on a blue background\n")
    assert main(["shapes", "eval", "--prompts", str(prompts), "--init", "prior", "--out", str(tmp_path / "eval"),
                 "steps=1", "cutn=2", "init.prior_candidates=2"]) == 0
    run_config = (tmp_path / "eval" / "000-seed0" / "config.yaml").read_text()
    assert "mode: prior" in run_config and "prior: shapes" in run_config
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["summary"]["images"] == 1


def test_shapes_eval_random_start_drops_the_presets_pull(tmp_path, capsys):
    """`--init random` is plain CLIP guidance: the `shapes` preset's init.weight (a pull toward the
    prior's start) would otherwise hold the image near random codes."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on a blue background\n")
    assert main(["shapes", "eval", "--prompts", str(prompts), "--init", "random", "--out", str(tmp_path / "eval"),
                 "steps=1", "cutn=2"]) == 0
    run_config = yaml.safe_load((tmp_path / "eval" / "000-seed0" / "config.yaml").read_text())
    assert run_config["init"]["mode"] == "random" and run_config["init"]["weight"] == 0
    assert build_config("shapes", {}, [])["init"]["weight"] > 0  # the preset itself keeps its anchor


def test_shapes_eval_scores_each_image_against_a_drawing_of_its_caption(tmp_path, capsys):
    """The reference that separates a stuck optimisation from a fooled CLIP: the shipped CLIP scores
    a drawing of the caption (seen through the VQGAN) far above one step from random codes."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on a blue background\na circle\n")
    assert main(["shapes", "eval", "--prompts", str(prompts), "--init", "random", "--out", str(tmp_path / "eval"),
                 "steps=1", "cutn=2"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    drawn, open_caption = report["rows"]
    assert drawn["drawing_score"] > 0.8 > drawn["clip_score"]  # the shipped CLIP rates drawings at 0.85-0.91
    assert open_caption["drawing_score"] is None  # "a circle" names no colours to draw
    assert report["summary"]["below_drawing"] == 1.0
    assert "the CLIP scores 1 of 1 images below a drawing of their caption" in capsys.readouterr().out
