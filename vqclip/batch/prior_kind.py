"""The `prior-sample` job kind: `vqclip prior sample` as a batch job.

```yaml
jobs:
  - {kind: prior-sample, prompt: "a red circle", prior: shapes, preset: shapes, num: 8, seed: 1}
```

The keys are the command line's: `prompt`, `prior` (a name or folder; default the preset's
init.prior), `num`, `seed`, `temperature`, `top_k`, `top_p`, `supercondition`, and config keys
for the VQGAN and CLIP (usually through `preset`). The job writes sample.png (the best by CLIP)
and, for several samples, sample-0.png ... in rank order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from .jobs import JobOutput, ModelCache, config_for_job, generate_config_layers, model_key, register_kind

SAMPLE_KEYS = {"num": ("count", int), "seed": ("seed", int), "temperature": ("temperature", float),
               "top_k": ("top_k", int), "top_p": ("top_p", float), "supercondition": ("supercondition", float)}


def prior_layers(settings: dict):
    """(prompt, sample settings, preset, config overrides) from a prior-sample job's settings."""
    from ..prior.sample import SampleSettings

    settings = dict(settings)
    values = {}
    for key, (field_name, kind) in SAMPLE_KEYS.items():
        if key in settings:
            value = settings.pop(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise UserError(f"{key} must be {'a whole number' if kind is int else 'a number'}, not {value!r}")
            values[field_name] = kind(value)
    sample = SampleSettings(**values)
    sample.check()
    prior = settings.pop("prior", None)
    preset, overrides = generate_config_layers(settings)
    prompts = overrides.get("prompts") or []
    if len(prompts) != 1 or not isinstance(prompts[0], str) or not prompts[0].strip():
        raise UserError("prior-sample needs one text prompt: prompt: \"a red circle\"")
    init = overrides.get("init") or {}
    if not isinstance(init, dict):
        raise UserError(f"init must be a group of settings, not {init!r}")
    # init.mode=prior makes load_models load the prior beside the VQGAN and CLIP (one cache entry).
    overrides["init"] = {**init, "mode": "prior", **({"prior": str(prior)} if prior is not None else {})}
    return prompts[0], sample, preset, overrides


def check_prior_sample(settings: dict) -> None:
    from ..config import build_config

    build_config(None, prior_layers(settings)[3])


def resolve_prior_sample(settings: dict) -> dict:
    from ..config import build_config, to_dict

    prompt, sample, preset, overrides = prior_layers(settings)
    config = to_dict(build_config(preset, overrides))
    return {"prompt": prompt, "sample": dataclasses.asdict(sample), "vqgan": config["vqgan"],
            "clip": config["clip"], "prior": config["init"]["prior"], "precision": config.get("precision")}


def run_prior_sample(settings: dict, folder: Path, cache: ModelCache, device: str | None) -> JobOutput:
    from ..config import to_dict
    from ..generation import load_models
    from ..outputs import environment_info, save_png
    from ..prior.sample import sample_images

    prompt, sample, preset, overrides = prior_layers(settings)
    config = config_for_job(preset, overrides, folder, device)
    if not config.init.prior:
        raise UserError("no prior chosen: set prior: NAME|FOLDER, or use a preset that sets init.prior")
    models = cache.get(model_key(config), lambda: load_models(config))
    result = sample_images(models.prior, models.vqgan, prompt, sample, clip=models.clip)
    metadata = {"prompt": prompt, "prior": str(config.init.prior), "sample": dataclasses.asdict(sample),
                "vqgan": to_dict(config)["vqgan"], "environment": environment_info()}
    files = [folder / "sample.png"]
    save_png(files[0], result.images[0], {**metadata, "rank": 0, "score": result.scores[0]})
    if len(result.images) > 1:
        for rank, (image, score) in enumerate(zip(result.images, result.scores)):
            files.append(folder / f"sample-{rank}.png")
            save_png(files[-1], image, {**metadata, "rank": rank, "score": score})
    return JobOutput(files, result.scores[0], {"prompt": prompt, "preset": preset, "seed": sample.seed})


register_kind("prior-sample", run_prior_sample, check=check_prior_sample, resolve=resolve_prior_sample)
