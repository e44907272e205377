"""The registry: every entry parses, real architectures build from it, names fail loudly, CLI works."""

from __future__ import annotations

import sys

import pytest
import torch

from vqclip.cli import main
from vqclip.errors import UserError
from vqclip.models import registry
from vqclip.models.vqgan import build_vqgan, vqgan_spec_from_model_config


@pytest.mark.parametrize("name", [n for n, e in registry.VQGANS.items() if e.model])
def test_every_vqgan_entry_has_a_valid_architecture(name):
    spec = vqgan_spec_from_model_config(registry.VQGANS[name].model, name)
    expected = {"shapes": (512, 64), "digits": (128, 64)}.get(name, (spec["n_embed"], 256))
    assert (spec["n_embed"], spec["embed_dim"]) == expected and spec["n_embed"] in (128, 512, 1024, 8192, 16384)


@pytest.mark.parametrize("name", ["shapes", "digits"])
def test_bundled_vqgan_matches_its_registry_architecture(name):
    from vqclip.models.vqgan import read_taming_config

    config, _ = registry.fetch_vqgan(name, progress=False)
    read, params = read_taming_config(config), registry.VQGANS[name].model["params"]
    assert (read["ddconfig"], read["n_embed"], read["embed_dim"]) == (params["ddconfig"], params["n_embed"],
                                                                     params["embed_dim"])


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UserError, match="did you mean: imagenet_f16_16384"):
        registry.get_vqgan("imagenet_f16_1638")
    with pytest.raises(UserError, match="unknown pretrained tag for ViT-B-32 .nope. .did you mean: openai"):
        registry.download_by_name("ViT-B-32:nope")


def test_cached_files_are_used_without_network(tmp_path, monkeypatch, random_taming_state, save_lightning_checkpoint,
                                               taming_model_config, write_yaml):
    """A registry VQGAN already in $VQCLIP_CACHE loads without any request."""
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path))
    entry = registry.VQGANS["imagenet_f16_1024"]
    folder = tmp_path / entry.name
    folder.mkdir()
    write_yaml(folder / entry.config.filename, taming_model_config())
    save_lightning_checkpoint(folder / entry.checkpoint.filename, random_taming_state())
    # the tiny stand-in is far below the published 958 MB: the size check must catch a broken mirror
    with pytest.raises(UserError, match="only .* MB where about 958 MB were expected"):
        registry.load_vqgan_from_config({"name": "imagenet_f16_1024"}, progress=False)
    assert not (folder / entry.checkpoint.filename).exists()  # the broken file is removed


def test_models_check_and_list_from_the_cli(tiny_preset, capsys):
    assert main(["models", "check", "-p", str(tiny_preset)]) == 0
    out = capsys.readouterr().out
    assert "VQGAN: vq, 32 codes × 16, factor 2" in out and "tiny-clip.json input 32 px" in out
    assert main(["models", "list"]) == 0
    assert "imagenet_f16_16384" in capsys.readouterr().out
    assert main(["models", "check", "vqgan.config=missing.yaml", "vqgan.checkpoint=missing.ckpt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vqgan.config: no such file 'missing.yaml'" in err


@pytest.mark.parametrize("name,size", [("imagenet_f16_16384", 64), ("gumbel_f8_8192", 64)])
def test_real_architecture_with_random_weights(name, size):
    torch.manual_seed(0)
    vqgan = build_vqgan(vqgan_spec_from_model_config(registry.VQGANS[name].model)).eval().requires_grad_(False)
    with torch.no_grad():
        z = vqgan.encode(torch.rand(1, 3, size, size))
        assert z.shape == (1, 256, size // vqgan.factor, size // vqgan.factor)
        image = vqgan.decode(vqgan.quantize(z))
    assert image.shape == (1, 3, size, size) and 0 <= image.min() and image.max() <= 1
    assert "pytorch_lightning" not in sys.modules


@pytest.mark.parametrize("problem,expected", [
    ("missing", "vqgan.checkpoint: no such file"),
    ("unknown_name", "unknown VQGAN 'imagenet_f16_1638' (did you mean: imagenet_f16_16384"),
    ("not_taming", "is not a taming model config"),
    ("wrong_checkpoint", "does not belong to"),
    ("truncated", "cannot read checkpoint"),
    ("hostile", "refusing to load"),
])
def test_bad_model_files_through_the_cli(tmp_path, capsys, problem, expected, random_taming_state,
                                        save_lightning_checkpoint, write_tiny_vqgan):
    import os

    config, checkpoint = write_tiny_vqgan(tmp_path)
    args = [f"vqgan.config={config}", f"vqgan.checkpoint={checkpoint}"]
    if problem == "missing":
        args[1] = f"vqgan.checkpoint={tmp_path / 'nope.ckpt'}"
    elif problem == "unknown_name":
        args = ["vqgan.name=imagenet_f16_1638"]
    elif problem == "not_taming":
        config.write_text("hello: world\n")
    elif problem == "wrong_checkpoint":
        save_lightning_checkpoint(checkpoint, random_taming_state(n_embed=64))
    elif problem == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    elif problem == "hostile":
        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))
        torch.save({"state_dict": {}, "x": Exploit()}, checkpoint)
    assert main(["models", "check", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()
