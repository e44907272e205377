"""Loading VQGANs from the files users have, on random weights in the real layouts."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys

import pytest
import torch
from safetensors.torch import save_file

from vqclip.errors import UserError
from vqclip.models.checkpoint import UnsafeCheckpointError, load_state_dict
from vqclip.models.vqgan import MIN_DALLE_DDCONFIG, build_min_dalle_detokenizer, load_min_dalle_detokenizer, load_vqgan


def taming_reference(state, z, ddconfig, eps=1e-6):
    """taming's own Decoder + post_quant_conv on the same weights: what the adapter must reproduce."""
    from taming.modules.diffusionmodules.model import Decoder

    with contextlib.redirect_stdout(io.StringIO()):
        decoder = Decoder(**ddconfig)
    for module in decoder.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.eps = eps
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    post = torch.nn.Conv2d(state["post_quant_conv.weight"].shape[1], ddconfig["z_channels"], 1)
    post.load_state_dict({"weight": state["post_quant_conv.weight"], "bias": state["post_quant_conv.bias"]})
    with torch.no_grad():
        return decoder(post(z))


def test_lightning_checkpoint_loads_without_lightning(tmp_path, write_tiny_vqgan):
    config, checkpoint = write_tiny_vqgan(tmp_path)
    assert "pytorch_lightning" not in sys.modules
    vqgan = load_vqgan(config, checkpoint)
    assert "pytorch_lightning" not in sys.modules and "lightning" not in sys.modules
    assert vqgan.factor == 2 and vqgan.n_embed == 32 and vqgan.embed_dim == 16
    assert not any(p.requires_grad for p in vqgan.parameters())

    images = torch.rand(2, 3, 32, 32)
    z = vqgan.encode(images)
    assert z.shape == (2, 16, 16, 16)
    decoded = vqgan.decode(vqgan.quantize(z))
    assert decoded.shape == (2, 3, 32, 32)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_adapter_matches_taming_decoder(tmp_path, write_tiny_vqgan, random_taming_state, tiny_ddconfig):
    config, checkpoint = write_tiny_vqgan(tmp_path, seed=3)
    vqgan = load_vqgan(config, checkpoint)
    state = random_taming_state(seed=3)
    tokens = torch.randint(0, 32, (1, 4, 4), generator=torch.Generator().manual_seed(0))
    z = vqgan.tokens_to_z(tokens)
    expected = ((taming_reference(state, z, tiny_ddconfig) + 1) / 2).clamp(0, 1)
    assert torch.allclose(vqgan.decode(z), expected, atol=1e-5)
    assert torch.equal(vqgan.z_to_tokens(z), tokens)


def test_quantize_is_straight_through(tmp_path, write_tiny_vqgan):
    vqgan = load_vqgan(*write_tiny_vqgan(tmp_path))
    z = torch.randn(1, 16, 3, 3, requires_grad=True)
    z_q = vqgan.quantize(z)
    assert torch.allclose(z_q, vqgan.tokens_to_z(vqgan.z_to_tokens(z)))
    (z_q * torch.arange(9.0).reshape(1, 1, 3, 3)).sum().backward()
    assert torch.equal(z.grad, torch.arange(9.0).reshape(1, 1, 3, 3).expand(1, 16, 3, 3))
    book = vqgan.codebook
    assert torch.equal(vqgan.z_min.flatten(), book.min(0).values)
    assert torch.equal(vqgan.z_max.flatten(), book.max(0).values)


def test_gumbel_vq(tmp_path, write_tiny_vqgan):
    vqgan = load_vqgan(*write_tiny_vqgan(tmp_path, kind="gumbel"))
    assert vqgan.kind == "gumbel"
    images = torch.rand(1, 3, 32, 32)
    z1, z2 = vqgan.encode(images), vqgan.encode(images)
    assert torch.equal(z1, z2)  # argmax, not a Gumbel sample
    assert torch.equal(vqgan.tokens_to_z(vqgan.z_to_tokens(z1)), z1)  # codes lie in the codebook
    assert vqgan.decode(z1).shape == (1, 3, 32, 32)


def test_net2net_first_stage(tmp_path, random_taming_state, save_lightning_checkpoint, taming_model_config, write_yaml,
                             tiny_ddconfig):
    state = random_taming_state(seed=5)
    net2net_state = {"first_stage_model." + k: v for k, v in state.items()}
    net2net_state["transformer.tok_emb.weight"] = torch.randn(32, 8)
    net2net_state["cond_stage_model.encoder.conv_in.weight"] = torch.randn(4, 3, 3, 3)
    config = write_yaml(tmp_path / "net2net.yaml", {
        "target": "taming.models.cond_transformer.Net2NetTransformer",
        "params": {"cond_stage_key": "segmentation", "transformer_config": {"target": "x"},
                   "first_stage_config": taming_model_config(), "cond_stage_config": "__is_first_stage__"}})
    checkpoint = save_lightning_checkpoint(tmp_path / "last.ckpt", net2net_state)
    vqgan = load_vqgan(config, checkpoint)
    z = vqgan.tokens_to_z(torch.zeros(1, 2, 2, dtype=torch.long))
    expected = ((taming_reference(state, z, tiny_ddconfig) + 1) / 2).clamp(0, 1)
    assert torch.allclose(vqgan.decode(z), expected, atol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_plain_state_dict_formats(tmp_path, suffix, write_tiny_vqgan, random_taming_state):
    config, checkpoint = write_tiny_vqgan(tmp_path, seed=1)
    reference = load_vqgan(config, checkpoint)
    state = random_taming_state(seed=1)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    vqgan = load_vqgan(config, path)
    z = reference.tokens_to_z(torch.arange(16).reshape(1, 4, 4) % 32)
    assert torch.equal(vqgan.decode(z), reference.decode(z))


def test_min_dalle_detokenizer(tmp_path):
    torch.manual_seed(0)
    model = build_min_dalle_detokenizer()
    state = {k: v.half() for k, v in model.state_dict().items()}
    state["embedding.weight"] = state.pop("quantizer.embedding.weight")  # min-dalle's own key
    torch.save(state, tmp_path / "detoker.pt")
    vqgan = load_min_dalle_detokenizer(tmp_path / "detoker.pt")
    assert vqgan.codebook.dtype == torch.float32 and vqgan.factor == 16
    groupnorm = next(m for m in vqgan.modules() if isinstance(m, torch.nn.GroupNorm))
    assert groupnorm.eps == 1e-5
    tokens = torch.randint(0, 16384, (1, 2, 2))
    image = vqgan.decode(vqgan.tokens_to_z(tokens))
    assert image.shape == (1, 3, 32, 32) and 0 <= image.min() and image.max() <= 1
    reference = taming_reference({k: v.float() for k, v in state.items()},
                                 vqgan.codebook[tokens].movedim(-1, 1), MIN_DALLE_DDCONFIG, eps=1e-5)
    assert torch.allclose(image, reference.clamp(0, 1), atol=1e-5)  # already in [0, 1]: no (x+1)/2
    with pytest.raises(UserError, match="no encoder"):
        vqgan.encode(torch.rand(1, 3, 32, 32))


def test_hostile_pickle_is_refused(tmp_path):
    target = tmp_path / "pwned"

    class Exploit:  # what a malicious checkpoint does: a callable run while unpickling
        def __reduce__(self):
            return (shutil.copyfile, (__file__, str(target)))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="shutil.copyfile"):
        load_state_dict(tmp_path / "evil.ckpt")
    assert not target.exists()

    class ShellExploit:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    torch.save({"x": ShellExploit()}, tmp_path / "evil2.pt")
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_state_dict(tmp_path / "evil2.pt")
    assert not target.exists()


def test_checkpoint_for_another_config_is_named(tmp_path, write_tiny_vqgan, random_taming_state,
                                                 save_lightning_checkpoint):
    config, _ = write_tiny_vqgan(tmp_path)
    other = save_lightning_checkpoint(tmp_path / "other.ckpt", random_taming_state(n_embed=64))
    with pytest.raises(UserError, match=r"does not belong to .*wrong shape \(file vs model\) 1 \(quantizer.embedding.weight"):
        load_vqgan(config, other)


@pytest.mark.parametrize("problem", ["missing", "truncated", "not_taming", "unknown_target", "garbage_yaml"])
def test_bad_files_are_user_errors(tmp_path, problem, write_tiny_vqgan):
    config, checkpoint = write_tiny_vqgan(tmp_path)
    if problem == "missing":
        checkpoint = tmp_path / "nope.ckpt"
    elif problem == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif problem == "not_taming":
        config.write_text("steps: 3\n")
    elif problem == "unknown_target":
        config.write_text("model: {target: my.Model, params: {}}\n")
    elif problem == "garbage_yaml":
        config.write_text("model: [unclosed\n")
    with pytest.raises(UserError) as info:
        load_vqgan(config, checkpoint)
    assert "\n" not in str(info.value)
