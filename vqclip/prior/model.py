"""The BART prior of DALL-E mini: a text encoder and a causal image-token decoder, in plain PyTorch.

The module and parameter names are min-dalle's (`encoder.pt` / `decoder.pt` load as they are):
NormFormer-style layers (a layer norm before and after each attention), a GLU feed-forward with a
layer norm inside, learned positions, no biases in the linear layers. The decoder reads the image
tokens in row-major order after a start token whose index is `image_vocab` (one more row in the
embedding and the head than there are image tokens). Padding in the text is token `pad_token`
(1 in BART's vocabulary) and is masked out of every attention over the text.

Differences from min-dalle that do not change the numbers: attention runs through
`scaled_dot_product_attention` (masked scores are -inf instead of -1e12), the encoder takes any
batch size, and the key/value cache is a list per layer instead of one stacked tensor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PriorConfig:
    text_vocab: int = 50264  # rows of the text embedding (min-dalle mini 50264, mega 50272)
    text_length: int = 64  # text tokens read by the encoder (longer texts are cut)
    image_vocab: int = 16384  # image tokens the decoder may write; the start token is this index
    codebook_size: int = 16384  # codes the VQGAN decodes: sampling only draws among these
    grid: list[int] = field(default_factory=lambda: [16, 16])  # rows × columns of the token grid
    width: int = 1024  # embedding width (mini 1024, mega 2048)
    heads: int = 16
    glu: int = 2730  # width inside the GLU feed-forward (mini 2730, mega 4096)
    encoder_layers: int = 12
    decoder_layers: int = 12
    pad_token: int = 1  # BART's <pad>: masked out of the attention over the text

    @property
    def image_length(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict:
        return asdict(self)


MIN_DALLE_MINI = PriorConfig()
MIN_DALLE_MEGA = PriorConfig(text_vocab=50272, image_vocab=16415, width=2048, heads=32, glu=4096,
                             encoder_layers=24, decoder_layers=24)


class GLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.ln0 = nn.LayerNorm(width)
        self.ln1 = nn.LayerNorm(hidden)
        self.fc0 = nn.Linear(width, hidden, bias=False)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln0(x)
        return self.fc2(self.ln1(F.gelu(self.fc0(x)) * self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.out_proj = nn.Linear(width, width, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # B × T × W -> B × heads × T × W/heads
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k_proj(source)), self.split(self.v_proj(source))

    def attend(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        q = self.split(self.q_proj(queries))
        out = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask,
                                             is_causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, glu: int):
        super().__init__()
        self.pre_self_attn_layer_norm = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.glu = GLU(width, glu)

    def forward(self, x: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        h = self.pre_self_attn_layer_norm(x)
        x = x + self.self_attn_layer_norm(self.self_attn.attend(h, *self.self_attn.keys_values(h), text_mask))
        return x + self.glu(x)


class Encoder(nn.Module):
    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.text_vocab, config.width)
        self.embed_positions = nn.Embedding(config.text_length, config.width)
        self.layers = nn.ModuleList(EncoderLayer(config.width, config.heads, config.glu)
                                    for _ in range(config.encoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.width)
        self.final_ln = nn.LayerNorm(config.width)

    def forward(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """B × L text tokens (padded with pad_token) → B × L × width."""
        mask = attention_mask(text_tokens, self.config.pad_token)
        positions = torch.arange(text_tokens.shape[1], device=text_tokens.device)
        x = self.layernorm_embedding(self.embed_tokens(text_tokens) + self.embed_positions(positions))
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_ln(x)


def attention_mask(text_tokens: torch.Tensor, pad_token: int) -> torch.Tensor:
    """B × 1 × 1 × L: True where a query may look (every text token but the padding)."""
    return text_tokens.ne(pad_token)[:, None, None, :]


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, glu: int):
        super().__init__()
        self.pre_self_attn_layer_norm = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.pre_encoder_attn_layer_norm = nn.LayerNorm(width)
        self.encoder_attn = Attention(width, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(width)
        self.glu = GLU(width, glu)

    def forward(self, x: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor,
                cache: LayerCache | None = None, position: int = 0) -> torch.Tensor:
        h = self.pre_self_attn_layer_norm(x)
        keys, values = self.self_attn.keys_values(h)
        if cache is None:  # the whole sequence at once: causal attention
            attended = self.self_attn.attend(h, keys, values, causal=True)
        else:  # one new position: attend to everything cached so far
            keys, values = cache.append(keys, values, position)
            attended = self.self_attn.attend(h, keys, values)
        x = x + self.self_attn_layer_norm(attended)
        h = self.pre_encoder_attn_layer_norm(x)
        x = x + self.encoder_attn_layer_norm(self.encoder_attn.attend(h, *text, text_mask))
        return x + self.glu(x)


class LayerCache:
    """The self-attention keys and values of one layer for positions 0..position (preallocated)."""

    def __init__(self, batch: int, heads: int, length: int, head_width: int, device, dtype):
        self.keys = torch.zeros(batch, heads, length, head_width, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)

    def append(self, keys: torch.Tensor, values: torch.Tensor, position: int):
        self.keys[:, :, position:position + 1] = keys
        self.values[:, :, position:position + 1] = values
        return self.keys[:, :, :position + 1], self.values[:, :, :position + 1]


class Decoder(nn.Module):
    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.image_vocab + 1, config.width)
        self.embed_positions = nn.Embedding(config.image_length, config.width)
        self.layers = nn.ModuleList(DecoderLayer(config.width, config.heads, config.glu)
                                    for _ in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.width)
        self.final_ln = nn.LayerNorm(config.width)
        self.lm_head = nn.Linear(config.width, config.image_vocab + 1, bias=False)

    def text_keys_values(self, encoder_state: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys and values: computed once per text, reused every step."""
        return [layer.encoder_attn.keys_values(encoder_state) for layer in self.layers]

    def forward(self, previous: torch.Tensor, encoder_state: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: B × T tokens (start token first) → B × T × (image_vocab + 1) logits,
        where position t predicts image token t."""
        positions = torch.arange(previous.shape[1], device=previous.device)
        x = self.layernorm_embedding(self.embed_tokens(previous) + self.embed_positions(positions))
        for layer, text in zip(self.layers, self.text_keys_values(encoder_state)):
            x = layer(x, text, text_mask)
        return self.lm_head(self.final_ln(x))

    def new_cache(self, batch: int, device, dtype=torch.float32) -> list[LayerCache]:
        c = self.config
        return [LayerCache(batch, c.heads, c.image_length, c.width // c.heads, device, dtype) for _ in self.layers]

    def step(self, token: torch.Tensor, position: int, text: list[tuple[torch.Tensor, torch.Tensor]],
             text_mask: torch.Tensor, cache: list[LayerCache]) -> torch.Tensor:
        """One position with the key/value cache: B tokens (the previous ones) → B × (image_vocab + 1)."""
        index = torch.tensor([position], device=token.device)
        x = self.layernorm_embedding(self.embed_tokens(token[:, None]) + self.embed_positions(index))
        for layer, layer_text, layer_cache in zip(self.layers, text, cache):
            x = layer(x, layer_text, text_mask, layer_cache, position)
        return self.lm_head(self.final_ln(x))[:, 0]


class BartPrior(nn.Module):
    """Encoder + decoder. `loss(text_tokens, image_tokens)` trains; vqclip.prior.sample samples."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def start_tokens(self, batch: int, device) -> torch.Tensor:
        return torch.full((batch, 1), self.config.image_vocab, dtype=torch.long, device=device)

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Logits for every image token given the text and the tokens before it: B × N × vocab+1."""
        image_tokens = image_tokens.flatten(1)
        previous = torch.cat([self.start_tokens(len(image_tokens), image_tokens.device), image_tokens[:, :-1]], 1)
        encoder_state = self.encoder(text_tokens)
        return self.decoder(previous, encoder_state, attention_mask(text_tokens, self.config.pad_token))

    def loss(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        logits = self(text_tokens, image_tokens)
        return F.cross_entropy(logits.flatten(0, 1).float(), image_tokens.flatten())

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The optimiser's groups: weight decay on the matrices, none on embeddings, norms and biases."""
        decays = {name: p.ndim >= 2 and "embed" not in name for name, p in self.named_parameters()}
        return [{"params": [p for n, p in self.named_parameters() if decays[n]], "weight_decay": weight_decay},
                {"params": [p for n, p in self.named_parameters() if not decays[n]], "weight_decay": 0.0}]
