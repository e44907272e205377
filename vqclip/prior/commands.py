"""`vqclip prior sample` and the prior-sample batch job as plain functions (the CLI parses; these
load the models and write the images).

Which VQGAN and CLIP they use comes from a run config (a preset + `key=value`), the same way
generation chooses them, so `-p shapes` or `vqgan.config=... vqgan.checkpoint=...` work here too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from .sample import SampleSettings, sample_images, settings_for
from .weights import load_prior


def load_vqgan(config, device):
    """The VQGAN a run config names (`-p shapes`, or vqgan.config=... vqgan.checkpoint=...)."""
    from ..config import to_dict
    from ..models.registry import load_vqgan_from_config

    return load_vqgan_from_config(to_dict(config)["vqgan"], device, progress=not config.quiet)


def sample_job(prompt: str, out: str, config, options: dict, prior_spec: str | None) -> list[Path]:
    """`vqclip prior sample`: load the prior, the config's VQGAN and CLIP, then `write_samples`.

    `options` are SampleSettings fields; those left None take the prior's recommended values."""
    from ..config import to_dict
    from ..machine.device import pick_device
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
