"""A recipe's settings, layered as a run's config is (vqclip/config.py reads the `key=value`):
the recipe's defaults ← a world's own (DATA=shapes) ← the stored run's (`--resume`) ← `key=value`
← the flags (`--steps`, `--size`, `--seed`, `--from`).

Settings are the recipe's dataclass fields (`vqclip train vqgan ... n_embed=1024 ch=128`); for
`train all` they carry the recipe's name (`vqgan.steps=3000 clip.model=RN50 prior.width=256`),
and plain `steps=` / `init_weight=` set the written preset. With `--resume` the settings left out
are the stored run's, not the defaults (a given one that may not change is refused).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import apply_settings
from ..errors import UserError, unknown_choice
from .common import world_named
from .loop import stored_settings

RECIPES = ("vqgan", "clip", "prior", "all")
PARTS = ("vqgan", "clip", "prior")


def recipe_class(name: str):
    from .all import AllConfig
    from .clip import ClipTrainConfig
    from .prior import PriorTrainConfig
    from .vqgan import VQGANTrainConfig

    return {"vqgan": VQGANTrainConfig, "clip": ClipTrainConfig, "prior": PriorTrainConfig, "all": AllConfig}[name]


def stored(config, folder: Path):
    """`config` with the settings of the run whose state is in FOLDER/train_state.pt, if there is one."""
    path = folder / "train_state.pt"
    saved = stored_settings(path) if path.is_file() else None
    if saved is None:
        return config
    known = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in saved.items() if k in known})


def with_flags(config, flags: dict):
    given = {key: value for key, value in flags.items() if value is not None and hasattr(config, key)}
    return dataclasses.replace(config, **given)


def build_config(recipe: str, out: str | Path, settings: list[str], *, data: str | Path = "", resume: bool = False,
                 **flags):
    """The recipe's settings (see the module's docstring). flags: steps, size, seed, base (--from);
    None means not given."""
    if recipe not in RECIPES:
        raise unknown_choice("training recipe", recipe, RECIPES)
    out, world = Path(out), world_named(data)
    if recipe != "all":
        config = recipe_class(recipe)(**(world.RECIPE_SETTINGS[recipe] if world else {}))
        config = stored(config, out) if resume else config
        return with_flags(apply_settings(config, settings), flags)
    if flags.get("base"):
        raise UserError("train all: say which model --from is for, as vqgan.base=... or clip.base=...")
    config = recipe_class("all")()
    for part in PARTS:
        layered = dataclasses.replace(getattr(config, part), **(world.RECIPE_SETTINGS[part] if world else {}))
        setattr(config, part, stored(layered, out / part) if resume else layered)
    config = apply_settings(config, settings)
    for part in PARTS:
        setattr(config, part, with_flags(getattr(config, part), flags))
    if flags.get("size") is None:  # the prior encodes at the VQGAN's size: one size for the three
        config.clip.size = config.vqgan.size
    return config


def run(recipe: str, data: str, out: str, config, *, vqgan: str | None = None, **options) -> dict:
    """Run the recipe; options: held_out, template, resume, device, progress, size (prior).

    `vqgan`: the prior's VQGAN, or the one whose reconstructions the CLIP learns from (a world's
    shipped VQGAN when not given)."""
    from importlib import import_module

    from .common import open_vqgan
    from .distributed import session

    module = import_module(f"{__package__}.{recipe}")
    if recipe == "clip" and config.recon_fraction > 0:
        world = world_named(data)
        spec = vqgan or (world.NAME if world else None)
        options["vqgan"] = open_vqgan(spec) if spec else None  # loaded before the recipe seeds torch
    elif recipe == "prior":
        options["vqgan"] = vqgan
    if recipe != "prior":
        options.pop("size", None)
    with session():  # under torchrun the recipe joins the process group; leave it at the end
        return module.train(data, out, config, **options)
