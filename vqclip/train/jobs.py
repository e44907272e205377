"""`vqclip train RECIPE DATA --out DIR`: the settings of a recipe from flags and `key=value`, then the run.

Settings are the recipe's dataclass fields (`vqclip train vqgan ... n_embed=1024 ch=128`); for
`train all` they carry the recipe's name (`vqgan.steps=3000 clip.model=RN50 prior.width=256`),
and plain `steps=` / `init_weight=` set the written preset. With `--resume` the settings left out
are the stored run's, not the defaults (a given one that differs from it is refused).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError, unknown_choice
from ..training import apply_settings
from .common import stored_settings

RECIPES = ("vqgan", "clip", "prior", "all")


def recipe_class(name: str):
    from ..prior.train import TrainConfig
    from .all import AllConfig
    from .clip import ClipTrainConfig
    from .vqgan import VQGANTrainConfig

    return {"vqgan": VQGANTrainConfig, "clip": ClipTrainConfig, "prior": TrainConfig, "all": AllConfig}[name]


def stored(cls, folder: Path):
    """The settings of the run whose state is in FOLDER/train_state.pt, or None."""
    path = folder / "train_state.pt"
    if not path.is_file():
        return None
    saved = stored_settings(path)
    if saved is None:
        return None
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in known})


def _one(cls, folder: Path, settings: list[str], flags: dict, resume: bool, default=None):
    base = (stored(cls, folder) if resume else None) or default or cls()
    config = apply_settings(base, settings)
    for key, value in flags.items():
        if value is not None and hasattr(config, key):
            setattr(config, key, value)
    return config


def build_config(recipe: str, out: str | Path, settings: list[str], *, resume: bool = False, **flags):
    """The recipe's config: the defaults (or the stored run's with --resume) ← settings ← flags.

    flags: steps, size, seed, base (--from); None means not given."""
    if recipe not in RECIPES:
        raise unknown_choice("training recipe", recipe, RECIPES)
    out = Path(out)
    if recipe != "all":
        return _one(recipe_class(recipe), out, settings, flags, resume)
    if flags.get("base"):
        raise UserError("train all: say which model --from is for, as vqgan.base=... or clip.base=...")
    config = recipe_class("all")()
    parts = {name: [] for name in ("vqgan", "clip", "prior")}
    own = []
    for item in settings:
        name, dot, rest = item.partition(".")
        if dot and name in parts and "=" in rest:
            parts[name].append(rest)
        else:
            own.append(item)
    config = apply_settings(config, own)
    for name, items in parts.items():
        # train all's own defaults for each part (a smaller prior), not the recipe's alone
        setattr(config, name, _one(recipe_class(name), out / name, items, flags, resume, getattr(config, name)))
    if flags.get("size") is None:  # the prior encodes at the VQGAN's size: one size for the three
        config.clip.size = config.vqgan.size
    return config


def run(recipe: str, data: str, out: str, config, **options) -> dict:
    """Run the recipe; options: held_out, template, resume, device, progress, vqgan (prior only)."""
    from importlib import import_module

    from ..distributed import session

    module = import_module(f"{__package__}.{recipe}")
    if recipe == "prior":
        if not options.get("vqgan"):
            raise UserError("train prior needs --vqgan (a folder from vqclip train vqgan, or a VQGAN name)")
    else:
        options.pop("vqgan", None)
        options.pop("size", None)
    with session():  # under torchrun the recipe joins the process group; leave it at the end
        return module.train(data, out, config, **options)
