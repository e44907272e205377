"""CLIP models from open_clip: loading, ensembles, and the normalisation each model wants.

As in open_clip, the architecture and the weights are chosen separately. `name` is an open_clip
model name ("ViT-B-32"; OpenAI's "ViT-B/32" spelling works too) or the path of an open_clip
model-config JSON. `pretrained` is an open_clip tag ("openai", "laion2b_s34b_b79k") or a local
weight file (.pt/.pth/.bin/.safetensors, OpenAI's TorchScript archives included).
Weight files are always read by our safe loader and loaded strictly: a file that does not fit the
architecture is an error that names the keys, never a half-random model that runs anyway.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClipModelConfig
from ..errors import UserError, closest, unknown_choice
from .checkpoint import load_state_dict, state_dict_mismatch

log = logging.getLogger(__name__)

# OpenAI's checkpoints store these build constants next to the weights; they are not parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


class ClipModel(nn.Module):
    """A frozen open_clip model with its tokenizer and its own image normalisation."""

    def __init__(self, model: nn.Module, tokenizer, name: str, embed_dim: int, weight: float = 1.0):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.embed_dim = int(embed_dim)
        self.weight = float(weight)
        # open_clip keeps the preprocessing that belongs to the weights on the visual tower.
        preprocess = model.visual.preprocess_cfg
        size = preprocess["size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if height != width:
            raise UserError(f"CLIP model {name} wants {height}x{width} images; only square inputs are supported")
        self.input_size = int(height)
        # F.interpolate anti-aliases only these two modes; open_clip's configs use nothing else.
        interpolation = preprocess.get("interpolation", "bicubic")
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic") else "bicubic"
        mean, std = model.visual.image_mean, model.visual.image_std
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise UserError(f"CLIP model {name}: mean and std must be three numbers, std positive ({mean}, {std})")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def train(self, mode: bool = True) -> ClipModel:
        # A parent module's .train() must not switch on dropout in a frozen feature extractor.
        return super().train(False)

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (n × context length); warns when a prompt is longer than the context."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        context_length = self.tokenizer.context_length
        # Tokenized one position longer, a prompt that still reaches the last position did not fit.
        # The empty prompt shows what an unused position holds (the padding differs per tokenizer).
        longer = self.tokenizer(texts + [""], context_length=context_length + 1)
        cut = [text for text, last in zip(texts, longer[:-1, -1]) if last != longer[-1, -1]]
        if cut:
            warnings.warn(
                f"{len(cut)} prompt(s) longer than the {context_length} tokens of CLIP model {self.name} "
                f"were truncated, e.g. {cut[0][:60]!r}...",
                stacklevel=2,
            )
        return self.tokenizer(texts, context_length=context_length)

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Unit-length fp32 text embeddings (n × embed_dim)."""
        tokens = self.tokenize(texts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Only the mean/std step, for B×3×H×W images in [0, 1] already at `input_size`."""
        return (images - self.mean.view(-1, 1, 1)) / self.std.view(-1, 1, 1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length fp32 embeddings of B×3×H×W images in [0, 1]; differentiable in `images`."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            # Anti-aliased: a plain downscale aliases, and CLIP reacts to aliasing patterns.
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode=self.interpolation, antialias=True,
                align_corners=False,
            )
        # The weights are bf16 in a fast step (vqclip.machine.precision); the embeddings are fp32 always.
        weights_dtype = next(self.model.parameters()).dtype
        return F.normalize(self.model.encode_image(self.normalize(images).to(weights_dtype)).float(), dim=-1)


class ClipEnsemble(nn.Module):
    """Several CLIP models, each with its loss weight; the caller combines their losses."""

    def __init__(self, members: Sequence[ClipModel]):
        super().__init__()
        if not members:
            raise UserError("no CLIP model given: clip.models needs at least one entry")
        self.members = nn.ModuleList(members)

    @property
    def weights(self) -> list[float]:
        return [member.weight for member in self.members]

    def encode_text(self, texts: str | Sequence[str]) -> list[torch.Tensor]:
        """Text embeddings per member (their embedding spaces differ, so they are not stacked)."""
        return [member.encode_text(texts) for member in self.members]

    def encode_image(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Image embeddings per member, each resizing `images` to its own input size."""
        return [member.encode_image(images) for member in self.members]


@torch.no_grad()
def clip_scores(clip, images: torch.Tensor, targets: Sequence[tuple[float, Sequence[torch.Tensor]]],
                chunk: int = 64) -> torch.Tensor:
    """The CLIP score of each image: Σ over the ensemble's members and the targets of member weight ·
    target weight · cosine(image, target). `targets` are (weight, one unit embedding per member);
    images are embedded `chunk` at a time, so memory stays bounded however many are scored."""
    totals = torch.zeros(images.shape[0], device=images.device)
    for index, member in enumerate(clip.members):
        embeddings = torch.cat([member.encode_image(part) for part in images.split(chunk)])
        for weight, embedding in targets:
            totals += member.weight * weight * (embeddings @ embedding[index].to(embeddings.device))
    return totals


@torch.no_grad()
def clip_score_table(clip, images: torch.Tensor, texts: Sequence[str], chunk: int = 64) -> torch.Tensor:
    """The CLIP score of each image against each text alone ([images, texts]): Σ over the ensemble's
    members of member weight · cosine(image, text). Each image is embedded once, `chunk` at a time,
    however many texts there are (`clip_scores` with one text per call embeds them once per text)."""
    table = torch.zeros(images.shape[0], len(texts), device=images.device)
    for member in clip.members:
        embeddings = torch.cat([member.encode_image(part) for part in images.split(chunk)])
        table += member.weight * (embeddings @ member.encode_text(list(texts)).to(embeddings.device).T)
    return table


def load_clip(spec: ClipModelConfig | Mapping, device: str | torch.device = "cpu") -> ClipModel:
    """Build the open_clip model of `spec`, load its weights, freeze it and move it to `device`."""
    from open_clip.model import set_model_preprocess_cfg

    spec = _as_spec(spec)
    arch, model_cfg, preprocess, builtin = _architecture(spec.name)
    path, tag_cfg = _resolve_weights(arch, spec.pretrained, builtin)
    state_dict, from_openai = _read_weights(path) if path else (None, False)
    # OpenAI trained with QuickGELU, but e.g. the "ViT-B-32" config builds nn.GELU: OpenAI weights
    # in a GELU model run fine and give silently worse embeddings. open_clip's tags say which need it.
    quick_gelu = bool(tag_cfg.get("quick_gelu")) or from_openai
    model = _build(arch, model_cfg, quick_gelu)
    if state_dict is None:
        log.warning("CLIP model %s has random weights (no pretrained given): its guidance is noise", spec.name)
    else:
        _load_weights(model, state_dict, source=path, name=spec.name)
    set_model_preprocess_cfg(model, _preprocess_cfg(arch, builtin, tag_cfg, preprocess, model.visual.image_size))
    clip = ClipModel(model, _tokenizer(arch, model_cfg, builtin), spec.name, model_cfg["embed_dim"], spec.weight)
    return clip.to(device)


def load_clip_ensemble(specs: Sequence[ClipModelConfig | Mapping], device: str | torch.device = "cpu") -> ClipEnsemble:
    """All models of `clip.models`, in order; an empty list is a UserError."""
    if not specs:  # before loading anything
        raise UserError("no CLIP model given: clip.models needs at least one entry")
    return ClipEnsemble([load_clip(spec, device) for spec in specs])


def _as_spec(spec: ClipModelConfig | Mapping) -> ClipModelConfig:
    if not isinstance(spec, (ClipModelConfig, Mapping)):
        raise UserError(f"a clip.models entry needs name, pretrained and weight, e.g. {{name: ViT-B-32}}, not {spec!r}")
    if isinstance(spec, Mapping):  # plain dicts and OmegaConf DictConfigs
        known = [f.name for f in fields(ClipModelConfig)]
        unknown = [key for key in spec if key not in known]
        if unknown:
            raise unknown_choice("key in clip.models entry", str(unknown[0]), known)
        if "name" not in spec:
            raise UserError("a clip.models entry needs a name, e.g. {name: ViT-B-32, pretrained: openai}")
        spec = ClipModelConfig(**spec)
    if not isinstance(spec.name, str) or not spec.name:
        raise UserError(f"CLIP model name must be a non-empty string, not {spec.name!r}")
    try:
        weight = float(spec.weight)
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight) or weight <= 0:
        raise UserError(f"weight of CLIP model {spec.name} must be a positive number, not {spec.weight!r}")
    return ClipModelConfig(spec.name, str(spec.pretrained) if spec.pretrained else None, weight)


def names_config_file(name: str) -> bool:
    """Whether a CLIP model `name` is the path of a model-config JSON (else an open_clip name)."""
    return name.lower().endswith(".json")


def names_weight_file(pretrained: str) -> bool:
    """Whether a `pretrained` value is meant as a weight file (a weight suffix or a folder in it), not
    an open_clip tag; any file that exists is read as weights too."""
    return Path(pretrained).suffix.lower() in WEIGHT_SUFFIXES or os.sep in pretrained or "/" in pretrained


def _architecture(name: str) -> tuple[str, dict, dict, bool]:
    """(architecture name, model config, preprocessing overrides, is open_clip built-in) for `name`."""
    import open_clip

    if names_config_file(name):
        return _read_model_config(Path(name).expanduser())
    if name.startswith(("hf-hub:", "local-dir:")):
        raise UserError(f"{name}: give the path of the model-config JSON and the weight file instead")
    arch = name.replace("/", "-")  # OpenAI spells "ViT-B/32", open_clip "ViT-B-32"
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        models = open_clip.list_models()
        same = [m for m in models if m.lower() == arch.lower()]  # names are case-sensitive
        hint = f" (did you mean: {same[0]}?)" if same else closest(arch, models)
        raise UserError(
            f"unknown CLIP model {name!r}{hint}; open_clip.list_models() lists the {len(models)} known "
            "names, or give the path of an open_clip model-config JSON"
        )
    return arch, model_cfg, {}, True


def _read_model_config(path: Path) -> tuple[str, dict, dict, bool]:
    if not path.is_file():
        raise UserError(f"CLIP model config not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read CLIP model config {path}: {exc}") from None
    # open_clip's two layouts: a bare model config (as in open_clip/model_configs/), or the hub's
    # open_clip_config.json, which nests it under "model_cfg" next to "preprocess_cfg" (mean, std, ...).
    model_cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise UserError(f"{path} is not an open_clip model config: it needs embed_dim, vision_cfg and text_cfg")
    model_cfg = copy.deepcopy(model_cfg)
    preprocess = model_cfg.pop("preprocess_cfg", None) or data.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        raise UserError(f"{path}: preprocess_cfg must be a mapping such as {{\"mean\": [...], \"std\": [...]}}")
    return path.stem, model_cfg, preprocess, False


def _resolve_weights(arch: str, pretrained: str | None, builtin: bool) -> tuple[Path | None, dict]:
    """The weight file for `pretrained` and the open_clip tag config it belongs to ({} if none)."""
    import open_clip

    if not pretrained:
        return None, {}
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path, _tag_of_file(arch, path) if builtin else {}
    if builtin and open_clip.is_pretrained_cfg(arch, pretrained):
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        try:
            return _cached_weights(tag_cfg) or _download_weights(arch, pretrained, tag_cfg), tag_cfg
        except UserError:
            raise
        except Exception as exc:  # offline, hub down, no huggingface_hub: all mean "fetch it yourself"
            raise UserError(
                f"cannot fetch the {pretrained!r} weights of CLIP model {arch} ({type(exc).__name__}); "
                f"download {_tag_url(tag_cfg)} and give its path as pretrained"
            ) from None
    if names_weight_file(pretrained):
        raise UserError(f"pretrained weight file not found: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(arch) if builtin else []
    if not tags:
        raise UserError(f"pretrained {pretrained!r}: no such file, and CLIP model {arch} has no pretrained tags")
    raise UserError(f"{unknown_choice(f'pretrained tag of {arch}', pretrained, tags)}; or give a weight file")


CONNECT_TIMEOUT = 5.0  # seconds: without a network the hub's own retries take about a minute to give up


def _cached_weights(tag_cfg: dict) -> Path | None:
    """The tag's weights where open_clip keeps them (the Hugging Face cache or ~/.cache/clip), or None."""
    repo, filename = os.path.split(tag_cfg.get("hf_hub", ""))
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            cached = try_to_load_from_cache(repo, name)
            if isinstance(cached, str):
                return Path(cached)
        return None
    url = tag_cfg.get("url", "")
    cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return cached if url and cached.is_file() else None


def _download_weights(arch: str, pretrained: str, tag_cfg: dict) -> Path:
    """Fetch with open_clip once a short connection attempt shows the host can be reached."""
    import socket
    from urllib.parse import urlparse

    import open_clip

    url = _tag_url(tag_cfg)
    host = urlparse(url).hostname
    if host:
        try:
            socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise UserError(f"cannot reach {host} to fetch the {pretrained!r} weights of CLIP model {arch} "
                            f"({exc.strerror or type(exc).__name__}); download {url} and give its path as "
                            "pretrained") from None
    return Path(open_clip.download_pretrained(tag_cfg))


def _tag_url(tag_cfg: dict) -> str:
    repo, filename = os.path.split(tag_cfg.get("hf_hub", ""))
    if repo:
        return f"https://huggingface.co/{repo}/resolve/main/{filename or 'open_clip_pytorch_model.bin'}"
    return tag_cfg.get("url", "the weights")


def _tag_of_file(arch: str, path: Path) -> dict:
    """The tag whose Hugging Face cache holds `path`, so that QuickGELU and mean/std follow the weights."""
    import open_clip

    text = str(path.absolute())  # not resolved: the cache's snapshot link carries the repository name
    for tag in open_clip.list_pretrained_tags_by_model(arch):
        tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
        repo = os.path.split(tag_cfg.get("hf_hub", ""))[0]
        if repo and f"models--{repo.replace('/', '--')}{os.sep}" in text:
            return tag_cfg
    return {}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with compiled code; torch.save zips hold only data.pkl and tensors."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict in `path`, and whether it is an OpenAI checkpoint (trained with QuickGELU)."""
    if _is_torchscript(path):
        # OpenAI ships TorchScript archives. They hold TorchScript code and tensors, not Python
        # pickles, so torch.jit.load cannot import or call arbitrary Python; we only take the tensors.
        try:
            state_dict, from_openai = dict(torch.jit.load(str(path), map_location="cpu").state_dict()), True
        except RuntimeError as exc:
            raise UserError(f"cannot read TorchScript archive {path}: {str(exc).splitlines()[0][:200]}") from None
    else:
        state_dict = dict(load_state_dict(path))  # unwraps {"state_dict": ...}
        from_openai = any(key in state_dict for key in OPENAI_EXTRA_KEYS)
    # DataParallel/DDP training (open_clip's own included) saves every key under "module.".
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    for key in OPENAI_EXTRA_KEYS:
        state_dict.pop(key, None)
    return state_dict, from_openai


def _build(arch: str, model_cfg: dict, quick_gelu: bool) -> nn.Module:
    """The open_clip model for `model_cfg` with random weights (what open_clip.create_model builds)."""
    import open_clip

    model_cfg = copy.deepcopy(model_cfg)
    model_cfg["quick_gelu"] = model_cfg.get("quick_gelu", False) or quick_gelu
    vision_cfg, text_cfg = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    # The full checkpoint is loaded next: a timm or Hugging Face tower must not fetch its own weights.
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    custom_text = model_cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    model_class = open_clip.CLIP
    if custom_text:
        model_class = open_clip.CoCa if "multimodal_cfg" in model_cfg else open_clip.CustomTextCLIP
    try:
        return model_class(**model_cfg)
    except (TypeError, ValueError, KeyError) as exc:  # a hand-written config with a wrong key or value
        raise UserError(f"bad model config for CLIP model {arch}: {type(exc).__name__}: {exc}") from None
    except OSError as exc:  # a Hugging Face text tower whose config is neither cached nor reachable
        raise UserError(f"CLIP model {arch} needs Hugging Face files that cannot be fetched: {exc}") from None


def _load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: Path, name: str) -> None:
    """Load strictly; a mismatch is reported as a short list of keys."""
    from open_clip.model import convert_to_custom_text_state_dict

    if not hasattr(model, "positional_embedding"):  # CustomTextCLIP keeps the text tower under "text."
        state_dict = convert_to_custom_text_state_dict(state_dict)
    expected = model.state_dict()
    for key in ("logit_scale", "logit_bias"):  # a scalar or a 1-vector, depending on who saved it
        if key in state_dict and key in expected and state_dict[key].numel() == expected[key].numel() == 1:
            state_dict[key] = state_dict[key].reshape(expected[key].shape)
    # Non-persistent buffers (the text attention mask) are rebuilt by the model; TorchScript keeps them.
    rebuilt = {key for key, _ in model.named_buffers()} - set(expected)
    state_dict = {key: value for key, value in state_dict.items() if key not in rebuilt}
    mismatch = state_dict_mismatch(expected, state_dict)
    if mismatch:
        raise UserError(f"{source} does not fit CLIP model {name} ({mismatch}); is it another architecture?")
    model.load_state_dict(state_dict, strict=True)


def _preprocess_cfg(arch: str, builtin: bool, tag_cfg: dict, overrides: dict, image_size) -> dict:
    """open_clip's preprocessing dict: its defaults, then the weights' tag, then the config file."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    preprocess = asdict(PreprocessCfg())
    if builtin:
        # A file of unknown origin gets what all of the model's tags agree on (SigLIP uses 0.5, not OpenAI's).
        candidates = [tag_cfg] if tag_cfg else [
            open_clip.get_pretrained_cfg(arch, tag) for tag in open_clip.list_pretrained_tags_by_model(arch)
        ]
        chosen = [{k: c.get(k) for k in ("mean", "std", "interpolation")} for c in candidates]
        if chosen and all(c == chosen[0] for c in chosen):
            preprocess = merge_preprocess_dict(preprocess, chosen[0])
    preprocess = merge_preprocess_dict(preprocess, overrides)
    preprocess["size"] = image_size  # the tower decides, as in open_clip.create_model
    return preprocess


def _tokenizer(arch: str, model_cfg: dict, builtin: bool):
    import open_clip
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    if builtin:
        try:
            return open_clip.get_tokenizer(arch)
        except OSError as exc:  # Hugging Face tokenizers (SigLIP, ...) that are neither cached nor reachable
            raise UserError(f"the tokenizer of CLIP model {arch} cannot be fetched: {exc}") from None
    text_cfg = model_cfg["text_cfg"]  # a config file is not in open_clip's registry: read it here
    context_length = text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH)
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    if text_cfg.get("hf_tokenizer_name"):
        return HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context_length,
                           tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs)
    if kwargs:
        return open_clip.SimpleTokenizer(context_length=context_length, **kwargs)
    return shared_bpe(context_length)


@cache
def shared_bpe(context_length: int):
    """open_clip's default BPE tokenizer (no options) with this context length, built once per process.

    Why: building one reads and indexes 49k merges, 0.4 s, and the README's first command needed
    three (open_clip's own at import, the shapes CLIP's, the prior's): 0.8 s of its 10. The copies
    share open_clip's tables; only the context length differs."""
    import open_clip.tokenizer

    built = getattr(open_clip.tokenizer, "_tokenizer", None)  # open_clip's module-level default instance
    if not isinstance(built, open_clip.tokenizer.SimpleTokenizer):
        built = open_clip.tokenizer.SimpleTokenizer()
    twin = copy.copy(built)
    twin.context_length = context_length
    return twin
