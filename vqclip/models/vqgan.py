"""VQGANs as users have them: taming YAML + checkpoint, or min-dalle's detokenizer, behind one adapter.

taming's model classes (`taming.models.vqgan`) import an old pytorch-lightning API and break on
install, so the adapter rebuilds the same network from taming's *modules* (Encoder, Decoder)
with the same attribute names: a taming state dict loads into it as it is, with strict key
checking. VQ and Gumbel models differ only in the quantiser's layout; min-dalle's detokenizer
is a decoder-only f16/16384 VQGAN whose output is already in [0, 1].
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
import yaml
from torch import nn

from ..errors import UserError
from ..grad import clamp_with_grad, straight_through
from .checkpoint import check_state_dict, load_state_dict

VQ, GUMBEL = "vq", "gumbel"

# model.target in a taming YAML -> the quantiser it uses (Net2Net holds a VQGAN as its first stage).
TAMING_TARGETS = {
    "taming.models.vqgan.VQModel": VQ,
    "taming.models.vqgan.VQNoDiscModel": VQ,
    "taming.models.vqgan.GumbelVQ": GUMBEL,
    "taming.models.cond_transformer.Net2NetTransformer": "first_stage",
}

# min-dalle's detokenizer is the f16/16384 ImageNet VQGAN's decoder, with torch's default GroupNorm eps.
MIN_DALLE_DDCONFIG = dict(
    double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
    ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0,
)


class Quantizer(nn.Module):
    """The codebook, with taming's parameter names: `embedding` (VQ) or `embed` + `proj` (Gumbel)."""

    def __init__(self, kind: str, n_embed: int, embed_dim: int, z_channels: int):
        super().__init__()
        self.kind = kind
        if kind == GUMBEL:
            self.proj = nn.Conv2d(z_channels, n_embed, 1)  # logits over codes, from the encoder
            self.embed = nn.Embedding(n_embed, embed_dim)
        else:
            self.embedding = nn.Embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return (self.embed if self.kind == GUMBEL else self.embedding).weight


class VQGAN(nn.Module):
    """One adapter for VQ, Gumbel and min-dalle VQGANs.

    Latents `z` live in the codebook's space: B × embed_dim × H/factor × W/factor.
    `decode` returns images in [0, 1] whatever range the network was trained for.
    """

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, *, kind: str = VQ,
                 has_encoder: bool = True, signed_output: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder

        z_channels = ddconfig["z_channels"]
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its z shape
            self.encoder = Encoder(**ddconfig) if has_encoder else None
            self.decoder = Decoder(**ddconfig)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1) if has_encoder else None
        self.quantizer = Quantizer(kind, n_embed, embed_dim, z_channels)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        for module in self.modules():
            if isinstance(module, nn.GroupNorm):
                module.eps = norm_eps
        self.kind = kind
        self.keep_fp32 = ("quantizer",)  # a bf16 copy keeps the codebook exact: quantisation picks the same codes
        self.signed_output = signed_output  # taming decodes to [-1, 1], min-dalle to [0, 1]
        self.factor = 2 ** (len(ddconfig["ch_mult"]) - 1)
        self.trained_size = ddconfig.get("resolution")  # the image side it was trained on: size=auto stays near it
        self.n_embed, self.embed_dim = n_embed, embed_dim

    # -- the codebook -------------------------------------------------------------------------
    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizer.codebook

    @property
    def z_min(self) -> torch.Tensor:
        """Per-channel minimum over the codebook, shaped 1 × C × 1 × 1 for clamping z."""
        return self.codebook.amin(dim=0)[None, :, None, None]

    @property
    def z_max(self) -> torch.Tensor:
        return self.codebook.amax(dim=0)[None, :, None, None]

    def z_to_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code at each position: B × h × w (int64)."""
        flat = z.movedim(1, -1).reshape(-1, z.shape[1]).float()
        book = self.codebook.float()
        distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.T + book.pow(2).sum(1)
        return distance.argmin(1).reshape(z.shape[0], *z.shape[2:])

    def tokens_to_z(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codebook vectors for a B × h × w grid of indices: B × embed_dim × h × w."""
        return self.codebook[tokens].movedim(-1, 1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codes in the forward pass; the gradient reaches `z` unchanged (straight-through)."""
        return straight_through(z, self.tokens_to_z(self.z_to_tokens(z)).to(z.dtype))

    def relax(self, z: torch.Tensor, step: int, relaxation=None) -> torch.Tensor:
        """What optimisation step `step` decodes: the quantised z (the dVAE relaxes its logits here)."""
        return self.quantize(z)

    # -- encode / decode ----------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → z. VQ: the encoder's continuous latent; Gumbel: its most likely codes."""
        if self.encoder is None:
            raise UserError("this VQGAN (min-dalle's detokenizer) has no encoder: init images and image "
                            "keys need a taming VQGAN (vqgan.name or vqgan.config + vqgan.checkpoint)")
        h = self.quant_conv(self.encoder(2 * images - 1))
        if self.kind == GUMBEL:  # the argmax, not a Gumbel sample: encoding is deterministic
            return self.tokens_to_z(self.quantizer.proj(h).argmax(1))
        return h

    def decode(self, z_q: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
        """Quantised latents → images in [0, 1] (clamped, with the gradient that heals out-of-range values).

        `checkpoint`: keep only each resolution level's input for the backward pass and recompute the
        rest (one more decoder forward per step, for a fraction of the activation memory at large sizes).
        """
        h = self.post_quant_conv(z_q.to(self.post_quant_conv.weight.dtype))  # bf16 copies take bf16 input
        x = decode_checkpointed(self.decoder, h) if checkpoint and torch.is_grad_enabled() else self.decoder(h)
        if self.signed_output:
            x = (x + 1) / 2
        return clamp_with_grad(x, 0.0, 1.0)


def decode_checkpointed(decoder: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """taming's Decoder.forward, with activation checkpointing per resolution level.

    The same modules in the same order as taming's forward (a test holds them equal); only the
    storage of activations changes, so taming's code needs no patch.
    """
    from taming.modules.diffusionmodules.model import nonlinearity
    from torch.utils.checkpoint import checkpoint

    def middle(x):
        return decoder.mid.block_2(decoder.mid.attn_1(decoder.mid.block_1(decoder.conv_in(x), None)), None)

    def level(x, i_level):
        up = decoder.up[i_level]
        for i_block in range(decoder.num_res_blocks + 1):
            x = up.block[i_block](x, None)
            if len(up.attn) > 0:
                x = up.attn[i_block](x)
        return up.upsample(x) if i_level != 0 else x

    def end(x):
        return decoder.conv_out(nonlinearity(decoder.norm_out(x)))

    h = checkpoint(middle, h, use_reentrant=False)
    for i_level in reversed(range(decoder.num_resolutions)):
        h = checkpoint(level, h, i_level, use_reentrant=False)
    return h if decoder.give_pre_end else checkpoint(end, h, use_reentrant=False)


# -- building and loading -------------------------------------------------------------------------
def read_taming_config(path: str | Path) -> dict:
    """The VQGAN part of a taming YAML: {'kind', 'ddconfig', 'n_embed', 'embed_dim'}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VQGAN config not found: {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))  # safe: no Python tags
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot parse VQGAN config {path}: {str(exc).splitlines()[0]}") from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or "target" not in model:
        raise UserError(f"{path} is not a taming model config (it has no model.target)")
    return vqgan_spec_from_model_config(model, source=str(path))


def vqgan_spec_from_model_config(model: dict, source: str = "config") -> dict:
    target = model.get("target")
    kind = TAMING_TARGETS.get(target)
    if kind is None:
        raise UserError(f"{source}: model.target {target!r} is not a VQGAN vqclip can load; "
                        f"supported: {', '.join(TAMING_TARGETS)}")
    params = model.get("params") or {}
    if kind == "first_stage":
        first_stage = params.get("first_stage_config")
        if not isinstance(first_stage, dict):
            raise UserError(f"{source}: Net2NetTransformer config without params.first_stage_config")
        return {**vqgan_spec_from_model_config(first_stage, source), "prefix": "first_stage_model."}
    try:
        ddconfig = dict(params["ddconfig"])
        spec = {"kind": kind, "ddconfig": ddconfig, "n_embed": int(params["n_embed"]),
                "embed_dim": int(params["embed_dim"]), "prefix": ""}
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{source}: model.params lacks a valid {exc} (ddconfig, n_embed, embed_dim)") from None
    if params.get("remap"):
        raise UserError(f"{source}: VQGANs with a remapped codebook (params.remap) are not supported")
    return spec  # lossconfig and the temperature schedule are training-only: never built


def build_vqgan(spec: dict, **kwargs) -> VQGAN:
    """A VQGAN with the architecture of `spec` (from read_taming_config) and random weights."""
    return VQGAN(spec["ddconfig"], spec["n_embed"], spec["embed_dim"], kind=spec["kind"], **kwargs)


def select_vqgan_weights(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The VQGAN's own tensors: under `prefix` (Net2Net's first stage), without the training-only ones."""
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    # taming calls the codebook module `quantize`; here that name is the straight-through method.
    return {"quantizer." + k[len("quantize."):] if k.startswith("quantize.") else k: v
            for k, v in state.items() if not k.startswith("loss.")}


def taming_state_dict(model: VQGAN) -> dict[str, torch.Tensor]:
    """The adapter's weights under taming's key names: what select_vqgan_weights reads back."""
    return {("quantize." + k[len("quantizer."):] if k.startswith("quantizer.") else k): v.detach()
            for k, v in model.state_dict().items()}


def _finish(model: VQGAN, state: dict[str, torch.Tensor], device: str | torch.device) -> VQGAN:
    model.load_state_dict(state, strict=True, assign=True)
    model = model.float().to(device).eval()  # fp16 files (min-dalle) are computed in fp32
    model.requires_grad_(False)  # frozen: gradients go to z, never to the weights
    return model


def load_vqgan(config: str | Path, checkpoint: str | Path, device: str | torch.device = "cpu") -> VQGAN:
    """A taming VQGAN (VQModel, GumbelVQ, or a Net2Net's first stage) from its YAML and checkpoint."""
    spec = read_taming_config(config)
    state = select_vqgan_weights(load_state_dict(checkpoint), spec["prefix"])
    with torch.device("meta"):  # no time spent initialising weights that the checkpoint replaces
        model = build_vqgan(spec)
    check_state_dict(model, state, str(checkpoint), str(config))
    return _finish(model, state, device)


def load_min_dalle_detokenizer(checkpoint: str | Path, device: str | torch.device = "cpu") -> VQGAN:
    """min-dalle's `detoker.pt`: decoder-only, output in [0, 1], GroupNorm eps 1e-5."""
    state = load_state_dict(checkpoint)
    state = {("quantizer." + k if k == "embedding.weight" else k): v for k, v in state.items()}
    with torch.device("meta"):
        model = build_min_dalle_detokenizer()
    check_state_dict(model, state, str(checkpoint), "min-dalle's detokenizer (vqgan.format=min-dalle)")
    return _finish(model, state, device)


def build_min_dalle_detokenizer() -> VQGAN:
    return VQGAN(MIN_DALLE_DDCONFIG, 16384, 256, has_encoder=False, signed_output=False, norm_eps=1e-5)


