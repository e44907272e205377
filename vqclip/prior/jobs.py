"""The three `vqclip prior` jobs as plain functions (the CLI parses; these do the work).

Which VQGAN and CLIP they use comes from a run config (a preset + `key=value`), the same way
generation chooses them, so `-p shapes` or `vqgan.config=... vqgan.checkpoint=...` work here too.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..errors import UserError
from . import data as prior_data
from .sample import SampleSettings, sample_images, settings_for
from .train import TrainConfig, stored_config, train
from .weights import load_prior

log = logging.getLogger(__name__)


def load_vqgan(config, device):
    from ..config import to_dict
    from ..models.registry import load_vqgan_from_config

    return load_vqgan_from_config(to_dict(config)["vqgan"], device, progress=not config.quiet)


def vqgan_description(config, vqgan) -> dict:
    """How a data file names the VQGAN its tokens belong to (checked when a build is resumed)."""
    source = {k: v for k, v in dict(config.vqgan).items() if v is not None}
    return {**source, "codebook_size": int(vqgan.n_embed), "factor": int(vqgan.factor)}


def build_data_job(source: str, out: str, config, *, size: int, batch_size: int = 32, resume: bool = False,
                   progress: bool = True, template: str | None = None) -> prior_data.PriorData:
    from ..data.images import usable_pairs
    from ..data.pairs import read_pairs
    from ..device import pick_device

    listed = read_pairs(source, template)  # what SOURCE is, checked before the VQGAN is loaded
    device = pick_device(config.device)
    vqgan = load_vqgan(config, device)
    if size % vqgan.factor:
        raise UserError(f"--size {size} is not a multiple of the VQGAN's factor {vqgan.factor}")
    pairs, skipped = usable_pairs(listed)
    if not pairs:
        raise UserError(f"none of the images of {source} could be read (first: {skipped[0][1]})")
    for path, why in skipped:
        log.warning("skipped %s", why)
    return prior_data.build_data(prior_data.file_batches(pairs, size, batch_size), [p for p, _ in pairs], vqgan,
                                 vqgan_description(config, vqgan), out, resume=resume, progress=progress)


def train_config_from(settings: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """`key=value` strings (YAML values) over `base` (default: TrainConfig()) → TrainConfig;
    unknown keys and wrong types are refused."""
    from ..training import apply_settings

    config = apply_settings(base if base is not None else TrainConfig(), settings)
    positive = ("steps", "batch_size", "width", "heads", "glu", "decoder_layers", "encoder_layers", "text_length",
                "eval_every", "checkpoint_every", "eval_items")
    for key in positive:
        if getattr(config, key) <= 0:
            raise UserError(f"{key} must be at least 1, not {getattr(config, key)}")
    if config.width % config.heads:
        raise UserError(f"width {config.width} must be a multiple of heads {config.heads}")
    if not 0 < config.lr < 1 or not 0 <= config.blank_fraction < 1:
        raise UserError("lr must be in (0, 1) and blank_fraction in [0, 1)")
    return config


def train_job(data_path: str, out: str, settings: list[str], *, held_out: str | None = None, resume: bool = False,
              device: str = "cpu", progress: bool = True) -> dict:
    # --resume continues the stored run: the keys left out are its settings, not the defaults
    # (train() refuses a given key that disagrees with them)
    config = train_config_from(settings, stored_config(out) if resume else None)
    data = prior_data.load_data(data_path)
    held = prior_data.load_data(held_out) if held_out else None
    if held is not None and held.vqgan != data.vqgan:
        raise UserError(f"{held_out} was encoded with another VQGAN than {data_path}")
    return train(data, out, config, held_out=held, resume=resume, progress=progress, device=device)


def sample_job(prompt: str, out: str, config, options: dict, prior_spec: str | None) -> list[Path]:
    """`vqclip prior sample`: load the prior, the config's VQGAN and CLIP, then `write_samples`.

    `options` are SampleSettings fields; those left None take the prior's recommended values."""
    from ..config import to_dict
    from ..device import pick_device
    from ..models.clip import load_clip_ensemble
    from ..models.registry import resolve_clip
    from ..paths import check_paths

    prior_spec = prior_spec or config.init.prior
    if not prior_spec:
        raise UserError("no prior chosen: pass --prior NAME|FOLDER, or a preset that sets init.prior")
    check_paths(config, starting=False)  # the VQGAN's and CLIP's files, before the prior loads
    device = pick_device(config.device)
    prior = load_prior(prior_spec, device, progress=not config.quiet)
    vqgan = load_vqgan(config, device)
    clip = load_clip_ensemble([resolve_clip(spec) for spec in to_dict(config)["clip"]["models"]], device)
    unknown = prior.tokenizer.unknown_words(prompt)
    if unknown:
        print(f"vqclip: warning: the prior never saw {', '.join(unknown)}: it reads them as an unknown word")
    return write_samples(prompt, out, prior, vqgan, clip, options,
                         {"prior": str(prior_spec), "vqgan": to_dict(config)["vqgan"]})[0]


def write_samples(prompt: str, out: str | Path, prior, vqgan, clip, options: dict,
                  about: dict) -> tuple[list[Path], list[float], SampleSettings]:
    """Sample with `settings_for(prior, **options)`, rank by CLIP, write OUT (the best) and, for
    several, OUT's stem + -0, -1, ... in rank order, each PNG with `about` and the settings used.
    Returns the paths written, the scores best first and the settings used.

    Shared by `vqclip prior sample` and the prior-sample batch job, so that one prompt and seed
    give the same images both ways."""
    from ..outputs import environment_info, save_png

    settings = settings_for(prior, **options)
    result = sample_images(prior, vqgan, prompt, settings, clip=clip)
    metadata = {"prompt": prompt, **about, "sample": dataclasses.asdict(settings), "environment": environment_info()}
    out = Path(out)
    written = [out]
    save_png(out, result.images[0], {**metadata, "rank": 0, "score": result.scores[0]})
    if len(result.images) > 1:
        for rank, (image, score) in enumerate(zip(result.images, result.scores)):
            path = out.with_name(f"{out.stem}-{rank}{out.suffix or '.png'}")
            save_png(path, image, {**metadata, "rank": rank, "score": score})
            written.append(path)
    return written, result.scores, settings
