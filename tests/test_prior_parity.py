"""Parity with min-dalle (the reference DALL-E mini port): the same random state dicts give the same numbers.

Only `min_dalle.models` is used, imported by conftest's `min_dalle_models` fixture without running the
package's __init__ (which imports min_dalle.min_dalle, and that switches autograd off for the whole process).
min-dalle's decoder is fixed to 256 image tokens (16×16) and its encoder to a batch of 2 (the
unconditional and the conditional row), so the tests use those shapes with small widths.
"""

from __future__ import annotations

import pytest
import torch

from vqclip.models.vqgan import load_min_dalle_detokenizer
from vqclip.prior.model import BartPrior, PriorConfig, attention_mask

SMALL = PriorConfig(text_vocab=300, text_length=16, image_vocab=200, codebook_size=192, grid=[16, 16],
                    width=64, heads=4, glu=96, encoder_layers=2, decoder_layers=2)


def reference_models(min_dalle_models, config: PriorConfig, seed: int = 0):
    torch.manual_seed(seed)
    encoder = min_dalle_models.DalleBartEncoder(
        layer_count=config.encoder_layers, embed_count=config.width, attention_head_count=config.heads,
        text_vocab_count=config.text_vocab, text_token_count=config.text_length, glu_embed_count=config.glu,
        device="cpu")
    decoder = min_dalle_models.DalleBartDecoder(
        image_vocab_count=config.image_vocab, embed_count=config.width, attention_head_count=config.heads,
        glu_embed_count=config.glu, layer_count=config.decoder_layers, device="cpu")
    # nn.LayerNorm starts at weight 1, bias 0: randomise them so that parity covers every parameter.
    for module in (encoder, decoder):
        for name, parameter in module.named_parameters():
            if "ln" in name or "layer_norm" in name or "layernorm" in name:
                parameter.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    return encoder.eval(), decoder.eval()


def text_batch(config: PriorConfig) -> torch.Tensor:
    """The two rows min-dalle encodes: [<s>, </s>, pad...] and a caption [<s>, ..., </s>, pad...]."""
    tokens = torch.ones(2, config.text_length, dtype=torch.long)
    tokens[0, :2] = torch.tensor([0, 2])
    tokens[1, :7] = torch.tensor([0, 17, 250, 33, 99, 123, 2])
    return tokens


@pytest.fixture(scope="module")
def pair(min_dalle_models):
    encoder, decoder = reference_models(min_dalle_models, SMALL)
    prior = BartPrior(SMALL)
    prior.encoder.load_state_dict(encoder.state_dict(), strict=True)
    prior.decoder.load_state_dict(decoder.state_dict(), strict=True)
    return encoder, decoder, prior.eval()


def test_state_dict_layout_is_min_dalles(pair):
    encoder, decoder, prior = pair
    assert set(prior.encoder.state_dict()) == set(encoder.state_dict())
    assert set(prior.decoder.state_dict()) == set(decoder.state_dict())


@torch.no_grad()
def test_encoder_matches(pair):
    encoder, _, prior = pair
    text = text_batch(SMALL)
    expected = encoder(text)
    got = prior.encoder(text)
    assert got.shape == expected.shape == (2, SMALL.text_length, SMALL.width)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_decoder_logits_match_teacher_forcing(pair):
    encoder, decoder, prior = pair
    text = text_batch(SMALL)
    encoder_state = encoder(text)
    generator = torch.Generator().manual_seed(1)
    previous = torch.randint(SMALL.image_vocab, (1, 256), generator=generator)
    previous[:, 0] = SMALL.image_vocab  # the start token
    state = torch.zeros(SMALL.decoder_layers, 4, 256, SMALL.width)
    expected, _ = decoder(attention_mask=text.ne(1)[:, None, None, :], encoder_state=encoder_state,
                          attention_state=state, prev_tokens=previous, token_index=torch.arange(256))
    got = prior.decoder(previous.repeat(2, 1), encoder_state, attention_mask(text, SMALL.pad_token))
    assert got.shape == expected.shape == (2, 256, SMALL.image_vocab + 1)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    # the whole model (encoder + decoder, start token prepended) gives the same logits
    image_tokens = torch.cat([previous[:, 1:], torch.zeros(1, 1, dtype=torch.long)], 1).repeat(2, 1)
    assert torch.allclose(prior(text, image_tokens.view(2, 16, 16)), expected, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_decoder_kv_cache_matches_min_dalle_steps(pair):
    """Token by token with a key/value cache, as min-dalle samples: the same logits at each step."""
    encoder, decoder, prior = pair
    text = text_batch(SMALL)
    encoder_state = encoder(text)
    mask = text.ne(1)[:, None, None, :]
    state = torch.zeros(SMALL.decoder_layers, 4, 256, SMALL.width)
    tokens = [SMALL.image_vocab, 5, 190, 7, 42, 0]
    cache = prior.decoder.new_cache(2, "cpu")
    text_kv = prior.decoder.text_keys_values(encoder_state)
    full = prior.decoder(torch.tensor([tokens]).repeat(2, 1), encoder_state, mask)
    for position, token in enumerate(tokens):
        expected, state = decoder(attention_mask=mask, encoder_state=encoder_state, attention_state=state,
                                  prev_tokens=torch.tensor([[token]]), token_index=torch.tensor([position]))
        got = prior.decoder.step(torch.tensor([token, token]), position, text_kv, mask, cache)
        assert torch.allclose(got, expected[:, -1], atol=1e-4, rtol=1e-4), position
        assert torch.allclose(got, full[:, position], atol=1e-4, rtol=1e-4), position


@torch.no_grad()
def test_fp16_files_load_as_fp32(tmp_path, pair):
    """min-dalle ships encoder.pt / decoder.pt in fp16: they load into an fp32 prior."""
    from vqclip.prior.model import BartPrior as Prior
    from vqclip.prior.weights import load_min_dalle_prior

    encoder, decoder, _ = pair
    torch.save({k: v.half() for k, v in encoder.state_dict().items()}, tmp_path / "encoder.pt")
    torch.save({k: v.half() for k, v in decoder.state_dict().items()}, tmp_path / "decoder.pt")
    prior = load_min_dalle_prior(tmp_path, SMALL)
    assert isinstance(prior, Prior)
    assert all(p.dtype == torch.float32 for p in prior.parameters())
    text = text_batch(SMALL)
    assert torch.allclose(prior.encoder(text), encoder.half().float()(text), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_detokenizer_image_matches_through_vqclips_adapter(tmp_path, min_dalle_models):
    torch.manual_seed(3)
    reference = min_dalle_models.VQGanDetokenizer().eval()
    for name, parameter in reference.named_parameters():  # GroupNorms: not just 1 and 0
        if "norm" in name:
            parameter.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    torch.save(reference.state_dict(), tmp_path / "detoker.pt")
    vqgan = load_min_dalle_detokenizer(tmp_path / "detoker.pt")
    tokens = torch.randint(2 ** 14, (1, 256), generator=torch.Generator().manual_seed(4))
    expected = reference(False, tokens) / 255  # 256 × 256 × 3 in [0, 1]
    got = vqgan.decode(vqgan.tokens_to_z(tokens.view(1, 16, 16)))[0].permute(1, 2, 0)
    assert got.shape == expected.shape == (256, 256, 3)
    assert torch.allclose(got, expected, atol=1e-4)
