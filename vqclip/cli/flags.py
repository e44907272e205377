"""The flags several commands share, each declared once: its option strings, type and help.

A command attaches the ones it takes with `add(parser, "preset", "seed", ...)`; where a flag means
something narrower there, the command passes that help (or default) as an override:
`add(parser, out={"help": "the batch's output folder", "required": True})`. A flag that only one
command takes is declared in that command's module. tests/test_cli.py fails if an option string
is declared twice anywhere in vqclip/cli/.
"""

from __future__ import annotations

import argparse

FLAGS: dict[str, tuple[tuple[str, ...], dict]] = {
    "preset": (("-p", "--preset"), {"help": "a preset name (vqclip presets list) or a YAML file"}),
    "output": (("-o", "--output"), {"help": "also write the final image here"}),
    "out": (("--out",), {"help": "the folder to write into"}),
    "steps": (("--steps",), {"type": int, "help": "optimisation or training steps"}),
    "size": (("--size",), {"type": int, "help": "the image side in pixels"}),
    "seed": (("--seed",), {"type": int}),
    "threads": (("--threads",), {"type": int, "help": "CPU threads for torch (default: the usable cores)"}),
    "quiet": (("--quiet",), {"action": "store_true", "help": "no progress bar"}),
    "run_dir": (("--run-dir",), {"help": "the run folder (default outputs/<date>/<NNNN>-<slug>/)"}),
    "resume": (("--resume",), {"action": "store_true", "help": "continue from the training state in --out"}),
    "device": (("--device",), {"default": "cpu", "help": "cpu | cuda | cuda:N"}),
    "from": (("--from",), {"dest": "base"}),
    "vqgan": (("--vqgan",), {"help": "a VQGAN: a name (vqclip models list) or a folder from vqclip train vqgan"}),
    "seeds": (("--seeds",), {"type": int, "default": 1, "help": "seeds per prompt"}),
    "prior_samples": (("--prior-samples",), {"type": int, "default": 0, "help": "also judge this many samples of "
                                             "the prior alone per prompt, and the best of them by CLIP (default: none)"}),
    "mask": (("--mask",), {"help": "edit part of the start image: a greyscale or alpha mask, white = may change, "
                                   "black = keep (mask.* keys: feather, keep_weight, composite, cutouts, fill)"}),
    "mask_box": (("--mask-box",), {"type": float, "nargs": 4, "metavar": ("X0", "Y0", "X1", "Y1"),
                                   "help": "the region that may change, as a box: fractions of the image "
                                           "(all ≤ 1) or pixels"}),
    "mask_invert": (("--mask-invert",), {"action": "store_true", "help": "change the black part of the mask instead"}),
    "settings": (("settings",), {"nargs": "*", "help": "key=value settings"}),
    "ray": (("--ray",), {"nargs": "?", "const": True, "default": None, "metavar": "ADDRESS",
                         "help": "run on Ray: a new local Ray, or the cluster at ADDRESS (HOST:PORT, ray://HOST:PORT, "
                                 "auto)"}),
}

# The sizes of a run's image (generate, video): two sides, W H.
IMAGE_SIZE = {"nargs": 2, "metavar": ("W", "H"), "help": "the image's width and height in pixels"}
# A run folder to continue (generate, video), where training continues from --out.
RESUME_RUN = {"action": "store", "metavar": "RUN_DIR", "dest": "resume_dir",
              "help": "continue a run from its folder's state.pt (same result as never stopping)"}


def add(parser: argparse.ArgumentParser, *names: str, **overrides: dict) -> None:
    """Attach the shared flags `names` (and those in `overrides`, each with its own keyword arguments)."""
    for name in [*names, *overrides]:
        options, keywords = FLAGS[name]
        parser.add_argument(*options, **{**keywords, **overrides.get(name, {})})
