"""PGD adversarial training for the shapes CLIP: the attack stays in its ball and raises the loss,
and the recipe fine-tunes existing weights with it for a few steps (smoke)."""

from __future__ import annotations

import json

import pytest
import torch

from vqclip.cli import main
from vqclip.errors import UserError
from vqclip.shapes import adversarial
from vqclip.shapes.train_clip import ClipRecipe, export, build_model, train


def tiny_recipe(**changes) -> ClipRecipe:
    recipe = ClipRecipe(steps=2, contrast_groups=2, random_images=4, checkpoint_every=2, eval_images=8,
                        recon_fraction=0.0, bf16=False, robustness_eps=[2.0])
    for key, value in changes.items():
        setattr(recipe, key, value)
    return recipe


def quadratic_loss(target: torch.Tensor):
    """A loss that grows away from `target`: PGD must move images away from it."""
    return lambda images: ((images - target) ** 2).sum()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_in_range_and_raises_the_loss(norm):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=generator) * 0.8 + 0.1
    loss = quadratic_loss(images)
    eps = 0.05 if norm == "linf" else 0.5
    attacked = adversarial.pgd_images(loss, images, eps=eps, steps=3, norm=norm, generator=generator)
    change = attacked - images
    size = change.abs().flatten(1).amax(1) if norm == "linf" else change.flatten(1).norm(dim=1)
    assert (size <= eps + 1e-5).all() and (size > 0.5 * eps).all()
    assert attacked.min() >= 0 and attacked.max() <= 1
    assert loss(attacked) > loss(images)


def test_pgd_settings_are_checked():
    images = torch.rand(1, 3, 4, 4)
    with pytest.raises(UserError, match="adversarial_norm"):
        adversarial.pgd_images(quadratic_loss(images), images, eps=0.1, steps=1, norm="l1",
                               generator=torch.Generator())
    assert torch.equal(adversarial.pgd_images(quadratic_loss(images), images, eps=0.0, steps=1, norm="l2",
                                              generator=torch.Generator()), images)


def test_attack_on_the_clip_raises_its_contrastive_loss_and_keeps_its_mode():
    import open_clip

    from vqclip.shapes import world
    from vqclip.shapes.train_clip import normalize

    torch.manual_seed(0)
    model = build_model(ClipRecipe()).train()
    tokenizer = open_clip.SimpleTokenizer(context_length=24)
    images, captions, _ = world.batch(world.make_rng(0), 6)
    with torch.no_grad():
        text = model.encode_text(tokenizer(captions), normalize=True)
    loss_fn = open_clip.ClipLoss()
    attacked = adversarial.adversarial_batch(model, images, text, loss_fn, normalize, eps=2.0, steps=2, norm="l2",
                                             fraction=1.0, autocast=False, generator=torch.Generator().manual_seed(0))
    assert model.training
    model.eval()
    loss = adversarial.clip_attack_loss(model, text, loss_fn, normalize, autocast=False)
    with torch.no_grad():
        assert loss(attacked) > loss(images)


def test_recipe_fine_tunes_with_pgd(tmp_path):
    from vqclip.models.clip import load_clip

    start = tmp_path / "start"
    start.mkdir()
    torch.manual_seed(1)
    initial = build_model(tiny_recipe())
    export(initial, tiny_recipe(), start)
    recipe = tiny_recipe(init_from=str(start), adversarial_eps=1.0, adversarial_steps=2)
    metrics = train(tmp_path / "robust", recipe, progress=False)
    assert set(metrics["clean"]) == {"colour", "shape", "background"}
    assert set(metrics["pgd_l2_2"]) == {"colour", "shape", "background"}  # robustness is measured, not assumed
    assert json.loads((tmp_path / "robust" / "clip-metrics.json").read_text())["recipe"]["adversarial_eps"] == 1.0
    clip = load_clip({"name": str(tmp_path / "robust" / "clip.json"),
                      "pretrained": str(tmp_path / "robust" / "clip.safetensors")})
    assert clip.encode_image(torch.rand(1, 3, 64, 64)).shape == (1, 64)
    # Fine-tuning started from `initial`: with a tiny learning rate the weights barely move from it,
    # where a fresh model (another seed) would differ everywhere.
    tiny_lr = tiny_recipe(init_from=str(start), adversarial_eps=1.0, finetune_lr=1e-9)
    train(tmp_path / "still", tiny_lr, progress=False)
    still = torch.load(tmp_path / "still" / "train_state.pt", weights_only=True)["model"]
    reference = initial.state_dict()
    key = "visual.conv1.weight"
    assert torch.allclose(still[key], reference[key].half().float(), atol=1e-3)


def test_zero_shot_under_attack_measures_robustness():
    """The shipped CLIP is right on every clean drawing; an L2 attack of radius 4 takes most of them.

    The figure a robust CLIP would have to raise, so it must fall under attack and not at eps 0."""
    import open_clip

    from vqclip.shapes import world
    from vqclip.shapes.train_clip import load_initial_weights, zero_shot

    model = build_model(ClipRecipe()).eval()
    load_initial_weights(model, "vqclip/shapes/weights")
    tokenizer = open_clip.SimpleTokenizer(context_length=24)
    samples = world.held_out(24)
    images = torch.stack([world.to_tensor(image) for image, _, _ in samples])
    scenes = [scene for _, _, scene in samples]
    clean = zero_shot(model, tokenizer, images, scenes)
    assert zero_shot(model, tokenizer, images, scenes, attack_eps=0.0) == clean
    attacked = zero_shot(model, tokenizer, images, scenes, attack_eps=4.0)
    assert clean["shape"] == 1.0 and attacked["shape"] <= 0.6, attacked
    assert torch.equal(images, torch.stack([world.to_tensor(image) for image, _, _ in samples]))  # not in place


def test_init_from_a_folder_without_weights_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="clip.safetensors"):
        train(tmp_path / "out", tiny_recipe(init_from=str(tmp_path / "nowhere")), progress=False)


def test_cli_flags(tmp_path, capsys, monkeypatch):
    import vqclip.shapes.train_clip as recipe_module

    start = tmp_path / "start"
    start.mkdir()
    export(build_model(tiny_recipe()), tiny_recipe(), start)
    seen = {}
    real_train = recipe_module.train

    def recording_train(out, recipe, vqgan=None, **kwargs):
        seen["recipe"] = recipe
        return real_train(out, recipe, None, **kwargs)

    monkeypatch.setattr(recipe_module, "ClipRecipe", lambda: tiny_recipe())
    monkeypatch.setattr(recipe_module, "train", recording_train)
    assert main(["shapes", "train", "clip", "--steps", "1", "--out", str(tmp_path / "out"), "--quiet",
                 "--init-from", str(start), "--adversarial-eps", "0.5", "--noise", "0.3"]) == 0
    assert seen["recipe"].init_from == str(start) and seen["recipe"].adversarial_eps == 0.5
    assert seen["recipe"].noise == 0.3
    assert "clean" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["shapes", "train", "vqgan", "--steps", "1", "--out", str(tmp_path / "v"),
                 "--init-from", str(start)]) == 2
    assert main(["shapes", "train", "clip", "--steps", "1", "--out", str(tmp_path / "n"), "--noise", "2"]) == 2
    assert "--noise must be between 0 and 1" in capsys.readouterr().err
