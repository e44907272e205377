"""Generation negatives for the shapes CLIP: the loss, the chains (what a run does, resumable),
and the recipe fine-tuning with them, from Python and the command line."""

from __future__ import annotations

import json

import pytest
import torch

from vqclip.cli import main
from vqclip.cutouts import build_augmentations, make_cutouts
from vqclip.errors import UserError
from vqclip.shapes import world
from vqclip.shapes.generation_negatives import ChainPool, contrastive_loss
from vqclip.shapes.train_clip import ClipRecipe, build_model, export, normalize, train


@pytest.fixture(scope="module")
def vqgan():
    from vqclip.models.registry import load_vqgan_from_config

    return load_vqgan_from_config({"name": "shapes"}, progress=False)


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    import open_clip

    torch.manual_seed(0)
    return build_model(ClipRecipe()).eval(), open_clip.SimpleTokenizer(context_length=24)


def tiny_recipe(**changes) -> ClipRecipe:
    recipe = ClipRecipe(steps=4, contrast_groups=1, random_images=2, checkpoint_every=2, eval_images=8,
                        recon_fraction=0.0, bf16=False, generation_negatives=2, generation_pool=3,
                        generation_chain_steps=1, generation_lifetime=2, generation_cutn=2)
    for key, value in changes.items():
        setattr(recipe, key, value)
    return recipe


def unit(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_without_negatives_the_loss_is_open_clips():
    import open_clip

    images, texts, scale = unit(5, seed=1), unit(5, seed=2), torch.tensor(10.0)
    expected = open_clip.ClipLoss()(images, texts, scale)
    assert torch.allclose(contrastive_loss(images, texts, images[:0], scale), expected)


def test_a_negative_like_the_drawing_costs_more_than_one_unlike_it():
    texts, scale = unit(4, 64, seed=2), torch.tensor(10.0)
    images = torch.nn.functional.normalize(texts + 0.5 * unit(4, 64, seed=1), dim=-1)  # matched, not ideal
    none = contrastive_loss(images, texts, images[:0], scale)
    like = contrastive_loss(images, texts, texts.clone(), scale)  # each caption's ideal image, unmatched
    unlike = contrastive_loss(images, texts, -texts, scale)
    assert like > none + 0.5 and none < unlike < none + 0.01


def test_a_chain_takes_the_steps_torch_adam_takes(vqgan, clip_and_tokenizer):
    """A chain is a run from random codes: Adam on -cosine over cutouts, z clamped to the codebook."""
    clip, tokenizer = clip_and_tokenizer
    pool = ChainPool(vqgan, 2, lifetime=10, rng=world.make_rng(0), generator=torch.Generator().manual_seed(0))
    start, caption, state = pool.z[1].clone(), pool.captions[1], pool.generator.get_state()
    torch.manual_seed(5)  # Kornia draws from the global generator
    pool.advance(torch.tensor([1]), clip, tokenizer, normalize, steps=3, cutn=2, lr=0.1)

    generator = torch.Generator().set_state(state)
    torch.manual_seed(5)
    augment = build_augmentations("light")
    z = start[None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.1)
    with torch.no_grad():
        text = clip.encode_text(tokenizer([caption]), normalize=True)
    for _ in range(3):
        optimizer.zero_grad()
        cutouts = make_cutouts(vqgan.decode(vqgan.quantize(z)), 64, 2, noise_fac=0.1, augment=augment,
                               generator=generator)
        (-(clip.encode_image(normalize(cutouts), normalize=True) @ text.T).mean()).backward()
        optimizer.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, vqgan.z_max), vqgan.z_min))
    assert pool.steps.tolist() == [0, 3]
    assert torch.allclose(pool.z[1], z[0].detach(), atol=1e-5)
    assert not torch.equal(pool.z[1], start)


def test_guidance_raises_the_chains_scores_and_old_chains_restart(vqgan, clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    pool = ChainPool(vqgan, 3, lifetime=4, rng=world.make_rng(1), generator=torch.Generator().manual_seed(1))
    chains = pool.take(3)
    assert chains.tolist() == [0, 1, 2] and pool.take(2).tolist() == [0, 1]

    def scores():
        with torch.no_grad():
            images = clip.encode_image(normalize(pool.images(chains)), normalize=True)
            texts = clip.encode_text(tokenizer(pool.captions), normalize=True)
        return (images * texts).sum(-1)

    before = scores()
    pool.advance(chains, clip, tokenizer, normalize, steps=4, cutn=4, lr=0.1)
    assert (scores() > before).all()
    drawings, captions = pool.drawings(chains)
    assert drawings.shape == (3, 3, 64, 64) and captions == pool.captions
    guided = pool.z[2].clone()
    assert pool.take(1).tolist() == [2]  # chain 2 has lived its 4 steps: it restarts from random codes
    assert pool.steps.tolist() == [4, 4, 0] and not torch.equal(pool.z[2], guided)
    assert torch.equal(vqgan.tokens_to_z(vqgan.z_to_tokens(pool.z[2:])), pool.z[2:])
    assert not pool.exp_avg[2].any() and pool.exp_avg[1].any()


def test_recipe_fine_tunes_with_generation_negatives_and_resumes_to_the_same_state(tmp_path, vqgan, monkeypatch):
    start = tmp_path / "start"
    start.mkdir()
    torch.manual_seed(1)
    export(build_model(tiny_recipe()), tiny_recipe(), start)
    recipe = tiny_recipe(init_from=str(start))
    metrics = train(tmp_path / "straight", recipe, vqgan, progress=False)
    assert set(metrics["clean"]) == {"colour", "shape", "background"}
    written = json.loads((tmp_path / "straight" / "clip-metrics.json").read_text())["recipe"]
    assert written["generation_negatives"] == 2

    real_batch, calls = world.batch, []

    def killed_during_step_3(*args, **kwargs):  # as if the process died after the step-2 checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(world, "batch", killed_during_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "stopped", recipe, vqgan, progress=False)
    monkeypatch.setattr(world, "batch", real_batch)
    train(tmp_path / "stopped", recipe, vqgan, resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["chains"]["z"], b["chains"]["z"]) and a["chains"]["captions"] == b["chains"]["captions"]


def test_generation_negatives_need_weights_to_fine_tune(tmp_path, vqgan):
    with pytest.raises(UserError, match="--init-from"):
        train(tmp_path / "out", tiny_recipe(), vqgan, progress=False)


def test_cli_flag(tmp_path, capsys, monkeypatch):
    import vqclip.shapes.train_clip as recipe_module

    start = tmp_path / "start"
    start.mkdir()
    export(build_model(tiny_recipe()), tiny_recipe(), start)
    seen = {}
    real_train = recipe_module.train

    def recording_train(out, recipe, vqgan=None, **kwargs):
        seen["recipe"] = recipe
        return real_train(out, recipe, vqgan, **kwargs)

    monkeypatch.setattr(recipe_module, "ClipRecipe", lambda: tiny_recipe(generation_negatives=0))
    monkeypatch.setattr(recipe_module, "train", recording_train)
    assert main(["shapes", "train", "clip", "--steps", "1", "--out", str(tmp_path / "out"), "--quiet",
                 "--init-from", str(start), "--generation-negatives", "1"]) == 0
    assert seen["recipe"].generation_negatives == 1
    assert "clean" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["shapes", "train", "clip", "--steps", "1", "--out", str(tmp_path / "x"),
                 "--generation-negatives", "1"]) == 2  # no --init-from
    assert main(["shapes", "train", "prior", "--steps", "1", "--out", str(tmp_path / "p"),
                 "--generation-negatives", "1"]) == 2
    assert main(["shapes", "train", "clip", "--steps", "1", "--out", str(tmp_path / "n"),
                 "--init-from", str(start), "--generation-negatives", "-1"]) == 2
