"""vqclip.models.clip: tiny open_clip models built from a config in tmp_path; nothing is downloaded."""

import json
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vqclip.errors import UserError
from vqclip.models.clip import ClipEnsemble, ClipModelConfig, load_clip, load_clip_ensemble

MEAN, STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]


def tiny_config(image_size=32, vision_layers=1, embed_dim=16):
    # Width 64 with 64-wide heads: open_clip's OpenAI builder infers heads = width // 64.
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": vision_layers, "width": 64, "head_width": 64,
                       "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    }


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails at once, as it does offline."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(open_clip, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_hf", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", refuse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A custom architecture (hub layout, with its own mean/std), random weights saved in three formats."""
    folder = tmp_path_factory.mktemp("tiny")
    config = folder / "tiny-vit.json"
    config.write_text(json.dumps({"model_cfg": tiny_config(), "preprocess_cfg": {"mean": MEAN, "std": STD}}))
    torch.manual_seed(0)
    source = open_clip.CLIP(**tiny_config()).eval()
    state_dict = source.state_dict()
    torch.save(state_dict, folder / "plain.pt")
    save_file(state_dict, str(folder / "weights.safetensors"))
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state_dict.items()}}, folder / "ddp.pt")
    return {"config": str(config), "source": source, "folder": folder}


def reference_embeddings(model, images, texts, mean=MEAN, std=STD):
    """What the source model gives, normalising by hand with the config's mean/std."""
    normalised = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        image = F.normalize(model.encode_image(normalised), dim=-1)
        text = F.normalize(model.encode_text(open_clip.tokenize(texts)), dim=-1)
    return image, text


@pytest.mark.parametrize("file", ["plain.pt", "weights.safetensors", "ddp.pt"])
def test_weight_formats_give_the_source_model(tiny, file):
    clip = load_clip({"name": tiny["config"], "pretrained": str(tiny["folder"] / file)})
    images, texts = torch.rand(2, 3, 32, 32), ["a red cube", "a blue sphere"]
    image_ref, text_ref = reference_embeddings(tiny["source"], images, texts)
    with torch.no_grad():
        image = clip.encode_image(images)
    text = clip.encode_text(texts)
    assert image.shape == (2, 16) and text.shape == (2, 16) and clip.embed_dim == 16
    assert image.dtype == text.dtype == torch.float32
    torch.testing.assert_close(image, image_ref)
    torch.testing.assert_close(text, text_ref)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))


def test_mean_and_std_come_from_the_config(tiny):
    clip = load_clip(ClipModelConfig(tiny["config"], str(tiny["folder"] / "plain.pt")))
    torch.testing.assert_close(clip.mean, torch.tensor(MEAN))
    torch.testing.assert_close(clip.std, torch.tensor(STD))
    images = torch.rand(1, 3, 32, 32)
    expected = (images - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(clip.normalize(images), expected)


def test_bare_config_without_preprocessing_uses_open_clip_defaults(tmp_path):
    config = tmp_path / "bare.json"
    config.write_text(json.dumps(tiny_config()))
    clip = load_clip({"name": str(config)})
    torch.testing.assert_close(clip.mean, torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    torch.testing.assert_close(clip.std, torch.tensor(open_clip.OPENAI_DATASET_STD))
    assert clip.input_size == 32


def test_gradient_reaches_the_image_and_parameters_stay_frozen(tiny):
    clip = load_clip({"name": tiny["config"], "pretrained": str(tiny["folder"] / "plain.pt")})
    assert all(not p.requires_grad for p in clip.parameters())
    clip.train()  # a parent calling .train() must not unfreeze dropout
    assert not clip.training and not clip.model.training
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = clip.encode_text(["a cat"])
    (clip.encode_image(images) @ target.T).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())


def test_larger_images_are_resized_to_the_input_size(tiny):
    clip = load_clip({"name": tiny["config"], "pretrained": str(tiny["folder"] / "plain.pt")})
    images = torch.rand(2, 3, 48, 48, requires_grad=True)
    embedding = clip.encode_image(images)
    resized = F.interpolate(images.detach(), size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
    image_ref, _ = reference_embeddings(tiny["source"], resized, [""])
    torch.testing.assert_close(embedding.detach(), image_ref)
    embedding.sum().backward()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize("layout", ["torchscript", "state_dict"])
def test_openai_checkpoints_get_quick_gelu(tmp_path, layout):
    """OpenAI's layout: fp16 weights plus build constants, as a TorchScript archive or a plain dict."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config()))  # no "quick_gelu": the file alone must decide
    torch.manual_seed(1)
    source = open_clip.CLIP(**tiny_config(), quick_gelu=True).half().eval()
    source.register_buffer("input_resolution", torch.tensor(32))  # OpenAI's models carry it too
    path = tmp_path / "ViT-tiny.pt"
    if layout == "torchscript":
        torch.jit.save(torch.jit.script(source), str(path))
    else:  # a state dict taken from OpenAI's model, build constants included
        torch.save(source.state_dict() | {"context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}, path)

    clip = load_clip({"name": str(config), "pretrained": str(path)})
    assert isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    assert isinstance(clip.model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)

    # Parity with open_clip's own builder for OpenAI state dicts (QuickGELU), in fp32.
    state_dict = {k: v for k, v in source.state_dict().items() if k not in ("attn_mask", "input_resolution")}
    reference = open_clip.model.build_model_from_openai_state_dict(state_dict, cast_dtype=None).float()
    images, texts = torch.rand(2, 3, 32, 32), ["a photo of a dog"]
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    image_ref, text_ref = reference_embeddings(reference, images, texts, mean, std)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(images), image_ref)
    torch.testing.assert_close(clip.encode_text(texts), text_ref)

    # The same weights with plain GELU give other embeddings: the check above has teeth.
    gelu = open_clip.CLIP(**tiny_config()).eval()
    gelu.load_state_dict(state_dict | {k: v for k, v in gelu.state_dict().items() if k == "attn_mask"},
                         strict=False)
    gelu_image, _ = reference_embeddings(gelu, images, texts, mean, std)
    assert not torch.allclose(gelu_image, image_ref, atol=1e-4)


def test_ensemble_of_models_with_different_input_sizes(tiny, tmp_path):
    config = tmp_path / "tiny48.json"
    config.write_text(json.dumps(tiny_config(image_size=48)))
    ensemble = load_clip_ensemble([
        {"name": tiny["config"], "pretrained": str(tiny["folder"] / "plain.pt")},
        ClipModelConfig(str(config), None, 0.5),
    ])
    assert isinstance(ensemble, ClipEnsemble)
    assert [m.input_size for m in ensemble.members] == [32, 48]
    assert ensemble.weights == [1.0, 0.5]
    texts = ensemble.encode_text(["a", "b", "c"])
    assert len(texts) == 2 and all(t.shape == (3, 16) for t in texts)
    images = ensemble.encode_image(torch.rand(1, 3, 64, 64))
    assert [i.shape for i in images] == [(1, 16), (1, 16)]


def test_empty_ensemble_is_a_user_error():
    with pytest.raises(UserError, match="at least one"):
        load_clip_ensemble([])


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(UserError, match="ViT-B-32") as error:
        load_clip({"name": "ViT-B-23", "pretrained": "openai"})
    assert "unknown CLIP model" in str(error.value)
    with pytest.raises(UserError, match=r"did you mean: ViT-B-32\?"):
        load_clip({"name": "vit-b-32"})


def test_checkpoint_of_another_architecture_names_the_keys(tiny, tmp_path):
    other = open_clip.CLIP(**tiny_config(vision_layers=2, embed_dim=8)).state_dict()
    path = tmp_path / "other.safetensors"
    save_file(other, str(path))
    with pytest.raises(UserError) as error:
        load_clip({"name": tiny["config"], "pretrained": str(path)})
    message = str(error.value)
    assert "\n" not in message and "does not fit" in message
    assert "unexpected 12 (visual.transformer.resblocks.1." in message
    assert "wrong shape (file vs model) 2 (" in message and "visual.proj (64, 8) vs (64, 16)" in message


def test_missing_file_unknown_tag_and_offline_tag_are_user_errors(tiny, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_clip({"name": tiny["config"], "pretrained": str(tmp_path / "nope.pt")})
    with pytest.raises(UserError, match="laion2b_s34b_b79k"):
        load_clip({"name": "ViT-B-32", "pretrained": "laion2b_s34b_b97k"})
    # The autouse fixture makes every download fail, as it does offline.
    with pytest.raises(UserError, match=r"download https://huggingface.co/timm/vit_base_patch32_clip_224\.openai/"):
        load_clip({"name": "ViT-B-32", "pretrained": "openai"})


def test_bad_specs_are_user_errors(tiny):
    with pytest.raises(UserError, match="pretrained"):
        load_clip({"name": tiny["config"], "pretraind": "x.pt"})
    with pytest.raises(UserError, match="positive"):
        load_clip({"name": tiny["config"], "weight": -1})
    with pytest.raises(UserError, match="needs name"):
        load_clip("ViT-B-32")


def test_bad_model_configs_are_user_errors(tmp_path):
    not_clip = tmp_path / "not-clip.json"
    not_clip.write_text(json.dumps({"embed_dim": 16}))
    with pytest.raises(UserError, match="needs embed_dim, vision_cfg and text_cfg"):
        load_clip({"name": str(not_clip)})
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(tiny_config() | {"text_cfg": {"widht": 32}}))
    with pytest.raises(UserError, match="bad model config .*widht"):
        load_clip({"name": str(typo)})
    with pytest.raises(UserError, match="not found"):
        load_clip({"name": str(tmp_path / "missing.json")})


def test_long_prompts_are_truncated_with_a_warning(tiny):
    clip = load_clip({"name": tiny["config"], "pretrained": str(tiny["folder"] / "plain.pt")})
    with pytest.warns(UserWarning, match="truncated"):
        tokens = clip.tokenize(["word " * 100, "short"])
    assert tokens.shape == (2, 77)
    with pytest.warns(UserWarning, match="truncated"):
        assert clip.encode_text("word " * 100).shape == (1, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip.tokenize(["word " * 75])  # 75 words + start + end = 77 tokens: fits exactly


def test_vit_b_32_with_random_weights():
    clip = load_clip({"name": "ViT-B/32"})
    assert clip.input_size == 224 and clip.embed_dim == 512
    torch.testing.assert_close(clip.mean, torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    image = clip.encode_image(torch.rand(1, 3, 224, 224))
    text = clip.encode_text(["a painting of a lighthouse"])
    assert image.shape == text.shape == (1, 512)


def test_the_default_bpe_tokenizer_is_built_once_and_encodes_as_open_clip_does():
    """Building open_clip's BPE costs 0.4 s; the CLIP and the prior share one (only the context length differs)."""
    from open_clip.tokenizer import SimpleTokenizer

    from vqclip.models.clip import shared_bpe
    from vqclip.prior.tokenizer import clip_bpe_ids

    short, long = shared_bpe(16), shared_bpe(77)
    assert short is shared_bpe(16) and short.bpe_ranks is long.bpe_ranks
    assert (short.context_length, long.context_length) == (16, 77)
    fresh = SimpleTokenizer(context_length=16)
    text = ["an orange triangle on a purple background, at the top left"]
    assert torch.equal(short(text), fresh(text))
    assert clip_bpe_ids(text[0]) == fresh.encode(text[0])


def test_an_unreachable_hub_fails_at_once_with_one_line(monkeypatch):
    import socket

    tried = []

    def no_route(address, timeout=None):
        tried.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr("vqclip.models.clip._cached_weights", lambda tag_cfg: None)
    with pytest.raises(UserError, match=r"cannot reach huggingface\.co to fetch the 'openai' weights of CLIP model "
                       r"ViT-B-32 \(TimeoutError\); download https://huggingface\.co/timm/"):
        load_clip({"name": "ViT-B-32", "pretrained": "openai"})
    assert tried == [(("huggingface.co", 443), 5.0)]  # one short attempt, not the hub's minute of retries


def test_clip_scores_weigh_members_and_targets():
    from types import SimpleNamespace

    from vqclip.models.clip import clip_scores

    def mean_colour(images):  # a "CLIP" whose embedding of an image is its mean colour, made unit length
        return torch.nn.functional.normalize(images.mean((2, 3)), dim=-1)

    members = [SimpleNamespace(weight=2.0, encode_image=mean_colour),
               SimpleNamespace(weight=0.5, encode_image=mean_colour)]
    red, green = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    red[:, 0], green[:, 1] = 1.0, 1.0
    to_red, to_green = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    scores = clip_scores(SimpleNamespace(members=members), torch.cat([red, green] * 3),
                         [(1.0, [to_red, to_red]), (-0.5, [to_green, to_green])], chunk=4)
    # red: (2 + 0.5) · 1 = 2.5; green: (2 + 0.5) · -0.5 = -1.25; chunks of 4 give the same as one pass
    assert scores.tolist() == pytest.approx([2.5, -1.25] * 3)
