"""The files and folders a run reads, checked before any model loads.

Loading the models takes seconds (the shapes world's about 6, a real VQGAN and CLIP far more); a
mistyped path should not wait for it. `named_paths` lists every path a resolved config names, each
with the key that names it; `check_paths` refuses the first one that is missing or unreadable, in
one line that names the key ("init.image: no such file 'x.png': check the path"). Every way into a
run calls it before loading: `generation.run` (the command line, `vqclip.generate`, `--from`,
`--resume`), `loading.load_models`, the video commands (with their keys and input video), and
each batch job as the batch file is read.

Only values that are paths are checked. Registry names (vqgan.name=shapes, init.prior=shapes),
CLIP architectures and tags (ViT-B-32, openai) and shipped augmentation pipelines are names: their
registries answer for them. Each loader keeps its own check (a file may go in between); this is
where a typo is said at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .errors import UserError

CHECK = "check the path"


@dataclass(frozen=True)
class NamedPath:
    """One path a run reads, and the key (or input) that names it."""

    key: str  # "init.image", "image_prompts[1]", "clip.models[0].pretrained", "key 2", "input"
    path: str | None  # None: the run needs this key and the config leaves it unset (`hint` says so)
    kind: str = "file"  # file | folder | file or folder
    hint: str = CHECK  # how to put it right


def named_paths(config: DictConfig | None, *, kind: str | None = None, inputs: Sequence[str] = (),
                starting: bool = True) -> list[NamedPath]:
    """Every path a run reads: a video command's `inputs` (`kind`: animate | interpolate | restyle),
    then the config's (when given).

    `starting`: the run starts from the files init.mode names (init.image, .tokens, .latent); a
    resumed run starts from its state.pt instead, and does not read them."""
    return [*_input_paths(kind, inputs), *(_config_paths(config, starting) if config is not None else [])]


def check_paths(config: DictConfig | None, *, kind: str | None = None, inputs: Sequence[str] = (),
                starting: bool = True, required: bool = True) -> None:
    """Refuse the first path of `named_paths` that is missing or unreadable: one UserError naming its key.

    `required`: a path the run needs and the config leaves unset (init.mode=image without
    init.image) is refused too; False for a batch job's own settings, whose preset may give it."""
    for named in named_paths(config, kind=kind, inputs=inputs, starting=starting):
        if named.path is None:
            if required:
                raise UserError(named.hint)
            continue
        problem = _problem(named)
        if problem:
            raise UserError(f"{named.key}: {problem}")


def _problem(named: NamedPath) -> str | None:
    path, kind = named.path, named.kind
    if not os.path.exists(path):
        return f"no such {kind} {path!r}: {named.hint}"
    folder = os.path.isdir(path)
    if kind == "file" and folder:
        return f"{path!r} is a folder: give a file ({named.hint})"
    if kind == "folder" and not folder:
        return f"{path!r} is a file: give a folder ({named.hint})"
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        return f"cannot read {path!r} (permission denied): make it readable, or give another path"
    return None


def _input_paths(kind: str | None, inputs: Sequence[str]) -> list[NamedPath]:
    """A restyle's input video; an interpolation's keys (or one video) that look like files: a key that
    does not is a prompt."""
    if kind == "restyle":
        return [NamedPath("input", str(text), "file or folder", "give a video file or a folder of frames")
                for text in inputs]
    if kind != "interpolate":
        return []

    def label(index: int) -> str:
        return "input" if len(inputs) == 1 else f"key {index + 1}"

    return [NamedPath(label(index), str(text), "file or folder",
                      "check the name; a prompt key is plain text without a file suffix")
            for index, text in enumerate(inputs) if looks_like_path(str(text))]


def looks_like_path(text: str) -> bool:
    """A video key or input that is meant as a file: a file suffix (.png, .mp4, .pt, ...), or a path
    separator in a text without spaces ("frames/", "./red", "keys/a"). Prompts with a slash between
    words ("a red/blue circle") stay prompts."""
    from .video.frames import IMAGE_SUFFIXES, READ_SUFFIXES

    separators = [sep for sep in (os.sep, os.altsep, "/") if sep]
    return Path(text).suffix.lower() in (*IMAGE_SUFFIXES, *READ_SUFFIXES, ".pt") or (
        any(sep in text for sep in separators) and not any(c.isspace() for c in text))


def _config_paths(config: DictConfig, starting: bool) -> list[NamedPath]:
    from .prompts import parse_image_prompt

    paths = [*_init_paths(config, starting)]
    if config.mask.image:  # a restyle may give a mask video or a folder of mask frames
        paths.append(NamedPath("mask.image", str(config.mask.image), "file or folder"))
    if config.palette.image:
        paths.append(NamedPath("palette.image", str(config.palette.image)))
    paths += [NamedPath(f"hold.{key}", str(config.hold[key])) for key in ("image", "mask") if config.hold[key]]
    paths += [NamedPath(f"image_prompts[{index}]", parse_image_prompt(text).text)
              for index, text in enumerate(config.image_prompts)]
    if isinstance(config.augmentations, str):
        from .cutouts import pipeline_file

        file = pipeline_file(config.augmentations)
        if file is not None:
            paths.append(NamedPath("augmentations", file))
    # an encoder is read only by a dVAE; given for another format, the registry refuses it before loading
    used = ("config", "checkpoint", "encoder") if config.vqgan.format == "dvae" else ("config", "checkpoint")
    paths += [NamedPath(f"vqgan.{key}", str(config.vqgan[key])) for key in used if config.vqgan[key]]
    for index, model in enumerate(config.clip.models):
        paths += _clip_paths(f"clip.models[{index}]", model)
    return paths + _prior_paths(config)


INIT_FILES = {"image": "an image: --init-image PATH (init.image=PATH)",
              "tokens": "init.tokens=PATH (a saved grid of token indices)",
              "latent": "init.latent=PATH (a saved z or a run's state.pt)"}


def _init_paths(config: DictConfig, starting: bool) -> list[NamedPath]:
    """The file init.mode starts from; init.image also when a mask edits it (its pixels are kept)."""
    from .mask import is_editing

    init, mode = config.init, config.init.mode
    read = [mode] if starting and mode in INIT_FILES else []
    if is_editing(config.mask) and init.image and "image" not in read:
        read.append("image")
    return [NamedPath(f"init.{name}", str(init[name])) if init[name] else
            NamedPath(f"init.{name}", None, hint=f"init.mode={mode} needs {INIT_FILES[name]}") for name in read]


def _prior_paths(config: DictConfig) -> list[NamedPath]:
    from .models.registry import PRIORS
    from .start import needs_prior

    if not needs_prior(config):
        return []
    prior = config.init.prior
    if not prior:
        return [NamedPath("init.prior", None, hint="init.mode=prior and mask.fill=prior need init.prior: a prior "
                          "name (vqclip models list) or a folder")]
    if str(prior) in PRIORS:
        return []
    return [NamedPath("init.prior", str(prior), "folder", f"give a prior's folder, or a known prior: {', '.join(PRIORS)}")]


def _clip_paths(key: str, model) -> list[NamedPath]:
    """A CLIP model's config JSON and weight file, where they are given as paths (not a shipped
    model, an open_clip name or a tag)."""
    from .models.clip import names_config_file, names_weight_file
    from .models.registry import BUNDLED_CLIPS

    name, pretrained = str(model.name), model.pretrained
    if name in BUNDLED_CLIPS and pretrained in (None, name):
        return []
    paths = []
    if names_config_file(name):
        paths.append(NamedPath(f"{key}.name", os.path.expanduser(name), hint=f"{CHECK}, or give an open_clip "
                               "model name such as ViT-B-32"))
    if pretrained and names_weight_file(str(pretrained)):
        paths.append(NamedPath(f"{key}.pretrained", os.path.expanduser(str(pretrained)),
                               hint=f"{CHECK}, or give an open_clip tag such as openai"))
    return paths
