"""Prior files: vqclip's own (`prior.json` + `prior.safetensors`, fp16) and min-dalle's (`encoder.pt`, ...).

A vqclip prior folder holds `prior.json` ({"model": PriorConfig, "tokenizer": {...}, "vqgan":
what it was trained against}) and the weights in fp16 under `encoder.*` / `decoder.*`. A min-dalle
folder holds `encoder[_mini].pt`, `decoder[_mini].pt`, `vocab[_mini].json`, `merges[_mini].txt`:
plain fp16 state dicts under min-dalle's names, loaded as they are and computed in fp32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..atomic import atomic_open, atomic_write_text
from ..errors import UserError
from ..models.checkpoint import load_state_dict
from ..models.vqgan import check_state_dict
from .model import MIN_DALLE_MEGA, MIN_DALLE_MINI, BartPrior, PriorConfig
from .tokenizer import BartBpeTokenizer, ClipBpeTokenizer


@dataclass
class LoadedPrior:
    model: BartPrior
    tokenizer: object  # ClipBpeTokenizer | BartBpeTokenizer
    info: dict  # what prior.json says besides the model (e.g. the VQGAN it was trained with)


def config_from_dict(data: dict) -> PriorConfig:
    known = {f.name for f in fields(PriorConfig)}
    unknown = set(data) - known
    if unknown:
        raise UserError(f"prior config has unknown keys {sorted(unknown)}; valid: {sorted(known)}")
    return PriorConfig(**data)


def tokenizer_from_dict(data: dict):
    if data.get("kind") == "open_clip":
        return ClipBpeTokenizer(data.get("kept_ids"))
    raise UserError(f"unknown prior tokenizer {data.get('kind')!r}; valid: open_clip")


def save_prior(folder: str | Path, model: BartPrior, tokenizer, info: dict | None = None) -> None:
    """prior.safetensors (fp16) + prior.json, each written atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_open(folder / "prior.safetensors") as f:
        f.write(save(state))
    description = {"model": model.config.to_dict(), "tokenizer": tokenizer.to_dict(), **(info or {})}
    atomic_write_text(folder / "prior.json", json.dumps(description, indent=1) + "\n")


def load_prior(spec: str | Path, device: str | torch.device = "cpu", *, progress: bool = True) -> LoadedPrior:
    """A prior by registry name (`vqclip models list`) or folder: vqclip's format or min-dalle's."""
    from ..models.registry import PRIORS, fetch_prior

    spec = str(spec)
    folder = fetch_prior(spec, progress=progress) if spec in PRIORS else Path(spec)
    if not folder.is_dir():
        raise UserError(f"init.prior {spec!r} is neither a known prior ({', '.join(PRIORS)}) nor a folder")
    if (folder / "prior.json").is_file():
        return _load_vqclip_prior(folder, device)
    if any((folder / f"encoder{s}.pt").is_file() for s in ("", "_mini")):
        suffix = "_mini" if (folder / "encoder_mini.pt").is_file() else ""
        tokenizer = BartBpeTokenizer.from_files(folder / f"vocab{suffix}.json", folder / f"merges{suffix}.txt")
        model = load_min_dalle_prior(folder, device=device)
        return LoadedPrior(model, tokenizer, {"vqgan": "min-dalle"})
    raise UserError(f"{folder} holds no prior: expected prior.json + prior.safetensors (vqclip) "
                    "or encoder.pt + decoder.pt (min-dalle)")


def _load_vqclip_prior(folder: Path, device) -> LoadedPrior:
    description = _read_description(folder / "prior.json")
    try:
        config = config_from_dict(description["model"])
        tokenizer = tokenizer_from_dict(description["tokenizer"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{folder / 'prior.json'} is not a vqclip prior description: {exc}") from None
    state = load_state_dict(folder / "prior.safetensors")
    model = _finish(_meta_prior(config), state, str(folder), device)
    return LoadedPrior(model, tokenizer, _info(description))


def _read_description(path: Path) -> dict:
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a vqclip prior description: {exc}") from None
    if not isinstance(description, dict):
        raise UserError(f"{path} is not a vqclip prior description: not a JSON object")
    return description


def _info(description: dict) -> dict:
    return {k: v for k, v in description.items() if k not in ("model", "tokenizer")}


def prior_info(spec: str | Path) -> dict:
    """A prior's `info` (LoadedPrior.info: the VQGAN it was trained with, its recommended sampling)
    from prior.json alone, without loading or downloading the weights: what a batch job's hash needs.

    {} where there is no prior.json to read (min-dalle's files, or a folder that is not there: loading
    it is what reports that)."""
    from ..models.registry import PRIORS, fetch, model_dir

    spec = str(spec)
    if spec in PRIORS:
        listed = [file for file in PRIORS[spec] if file.filename == "prior.json"]
        if not listed:  # min-dalle's priors
            return {}
        path = fetch(listed[0], model_dir(spec), progress=False)  # bundled, or one small file
    else:
        path = Path(spec) / "prior.json"
        if not path.is_file():
            return {}
    return _info(_read_description(path))


def _meta_prior(config: PriorConfig) -> BartPrior:
    with torch.device("meta"):  # the weights come from the file: no time spent initialising them
        return BartPrior(config)


def _finish(model: BartPrior, state: dict, source: str, device) -> BartPrior:
    check_state_dict(model, state, source, f"a prior with {model.config}")
    model.load_state_dict(state, strict=True, assign=True)
    model = model.float().to(device).eval()
    model.requires_grad_(False)
    return model


def load_min_dalle_prior(folder: str | Path, config: PriorConfig | None = None,
                         device: str | torch.device = "cpu") -> BartPrior:
    """min-dalle's encoder and decoder state dicts (fp16 files → fp32) into a BartPrior.

    Without `config`, the sizes are read from the tensors' shapes (mini and mega alike)."""
    folder = Path(folder)
    suffix = "_mini" if (folder / "encoder_mini.pt").is_file() else ""
    state = {}
    for part in ("encoder", "decoder"):
        path = folder / f"{part}{suffix}.pt"
        if not path.is_file():
            raise UserError(f"min-dalle prior file missing: {path}")
        state.update({f"{part}.{k}": v for k, v in load_state_dict(path).items()})
    return _finish(_meta_prior(config or config_from_min_dalle_state(state, str(folder))), state, str(folder), device)


def config_from_min_dalle_state(state: dict[str, torch.Tensor], source: str) -> PriorConfig:
    """The sizes of a min-dalle prior from its tensors; heads = width / 64 (mini: 16, mega: 32)."""
    try:
        width = state["encoder.embed_tokens.weight"].shape[1]
        image_positions = state["decoder.embed_positions.weight"].shape[0]
        side = round(image_positions ** 0.5)
        image_vocab = state["decoder.embed_tokens.weight"].shape[0] - 1
        config = PriorConfig(
            text_vocab=state["encoder.embed_tokens.weight"].shape[0],
            text_length=state["encoder.embed_positions.weight"].shape[0],
            image_vocab=image_vocab, codebook_size=min(image_vocab, MIN_DALLE_MINI.codebook_size),
            grid=[side, image_positions // side], width=width, heads=max(1, width // 64),
            glu=state["encoder.layers.0.glu.fc0.weight"].shape[0],
            encoder_layers=len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")}),
            decoder_layers=len({k.split(".")[2] for k in state if k.startswith("decoder.layers.")}))
    except (KeyError, IndexError) as exc:
        raise UserError(f"{source} does not hold min-dalle's encoder/decoder (missing {exc})") from None
    for known in (MIN_DALLE_MINI, MIN_DALLE_MEGA):  # the published models: their exact settings
        if (known.width, known.text_vocab) == (config.width, config.text_vocab):
            return known
    return config
