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
from .generate_kind import config_for_job, generate_config_layers, model_key
from .kinds import JobOutput, ModelCache, register_kind

SAMPLE_KEYS = {"num": ("count", int), "seed": ("seed", int), "temperature": ("temperature", float),
               "top_k": ("top_k", int), "top_p": ("top_p", float), "supercondition": ("supercondition", float)}


def prior_layers(settings: dict):
    """(prompt, the sampling settings the job gives, preset, config overrides) from a job's settings.

    The sampling settings are the job's own keys only (SampleSettings field names): the prior's
    recommendation fills the rest through `settings_for`, as for `vqclip prior sample`."""
    from ..prior.sample import SampleSettings

    settings = dict(settings)
    explicit = {}
    for key, (field_name, kind) in SAMPLE_KEYS.items():
        if key in settings:
            value = settings.pop(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise UserError(f"{key} must be {'a whole number' if kind is int else 'a number'}, not {value!r}")
            explicit[field_name] = kind(value)
    SampleSettings(**explicit).check()  # refuse out-of-range values before the batch starts
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
    return prompts[0], explicit, preset, overrides


def check_prior_sample(settings: dict) -> None:
    """The sampling settings, the config keys, and the prior folder or model files the job names."""
    from ..config import build_config
    from ..paths import check_paths

    check_paths(build_config(None, prior_layers(settings)[3]), required=False)


def resolve_prior_sample(settings: dict) -> dict:
    """What the hash covers: the settings the job will sample with (the prior's recommendation read
    from its prior.json, under the job's keys), the models, the prompt."""
    from ..config import build_config, to_dict
    from ..prior.sample import settings_for
    from ..prior.weights import prior_info

    prompt, explicit, preset, overrides = prior_layers(settings)
    config = to_dict(build_config(preset, overrides))
    spec = chosen_prior(config["init"]["prior"])
    sample = settings_for(prior_info(spec), **explicit)
    return {"prompt": prompt, "sample": dataclasses.asdict(sample), "vqgan": config["vqgan"],
            "clip": config["clip"], "prior": spec, "precision": config.get("precision")}


def chosen_prior(spec: str | None) -> str:
    if not spec:
        raise UserError("no prior chosen: set prior: NAME|FOLDER, or use a preset that sets init.prior")
    return str(spec)


def run_prior_sample(settings: dict, folder: Path, cache: ModelCache, device: str | None) -> JobOutput:
    from ..config import to_dict
    from ..loading import load_models
    from ..prior.commands import write_samples

    prompt, explicit, preset, overrides = prior_layers(settings)
    config = config_for_job(preset, overrides, folder, device)
    spec = chosen_prior(config.init.prior)
    models = cache.get(model_key(config), lambda: load_models(config))
    about = {"prior": spec, "vqgan": to_dict(config)["vqgan"]}
    files, scores, used = write_samples(prompt, folder / "sample.png", models.prior, models.vqgan, models.clip,
                                        explicit, about)
    return JobOutput(files, scores[0], {"prompt": prompt, "preset": preset, "seed": used.seed})


register_kind("prior-sample", run_prior_sample, check=check_prior_sample, resolve=resolve_prior_sample)
