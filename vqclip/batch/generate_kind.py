"""The `generate` job kind: `vqclip PROMPT ...` as a batch job, and the settings helpers the
other kinds share (a job's keys are the command line's: flag names and config keys).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .kinds import JobOutput, ModelCache, register_kind

CHOSEN_BY_THE_BATCH = ("run_dir", "output", "outputs_root")


def generate_config_layers(settings: dict) -> tuple[str, dict]:
    """(preset, overrides) from a job's settings: its keys are the command line's flag names and config keys."""
    from ..config import overrides_from_flags

    overrides = dict(settings)
    preset = overrides.pop("preset", "default")
    if not isinstance(preset, str) or not preset:
        raise UserError(f"preset must be a preset name or a YAML path, not {preset!r}")
    for key in CHOSEN_BY_THE_BATCH:
        if key in overrides:
            raise UserError(f"{key} cannot be set in a batch: each job writes into its own folder under --out")
    return preset, overrides_from_flags(overrides)


def check_generate(settings: dict) -> None:
    """Keys and types, against the schema, and the files the job's settings name (the preset itself
    is read when the job runs)."""
    from ..config import build_config
    from ..paths import check_paths

    check_paths(build_config(None, generate_config_layers(settings)[1]), required=False)


def resolve_generate(settings: dict) -> dict:
    from ..config import build_config, to_dict

    config = to_dict(build_config(*generate_config_layers(settings)))
    for key in ("quiet", *CHOSEN_BY_THE_BATCH):
        config.pop(key, None)
    return config


def run_generate(settings: dict, folder: Path, cache: ModelCache, device: str | None) -> JobOutput:
    from ..generation import run
    from ..loading import load_models
    from ..paths import check_paths

    preset, overrides = generate_config_layers(settings)
    config = config_for_job(preset, overrides, folder, device)
    check_paths(config)  # with the preset's too, before any model loads
    result = run(config, models=cache.get(model_key(config), lambda: load_models(config)))
    files = [result.run_dir / "final.png"] + sorted(result.run_dir.glob("candidate-*.png"))
    prompt = " | ".join(result.config["prompts"]) or _title(result.config)
    return JobOutput(files, result.scores[0], {"prompt": prompt, "preset": preset, "seed": result.config["seed"]})


def config_for_job(preset: str, overrides: dict, folder: Path, device: str | None):
    """The job's config, writing into its folder, quietly, on the worker's device if it owns one."""
    from ..config import build_config

    config = build_config(preset, {**overrides, "run_dir": str(folder), "quiet": True})
    if device and config.device == "auto":  # a worker that owns one GPU runs its jobs there
        config.device = device
    return config


def model_key(config) -> str:
    """The model cache's key: what load_models reads (vqclip.loading.models_key)."""
    from ..loading import models_key

    return models_key(config)


def _title(config: dict) -> str:
    schedule = config.get("schedule") or {}
    return str(next(iter(schedule.values()))) if schedule else ""


register_kind("generate", run_generate, check=check_generate, resolve=resolve_generate)
