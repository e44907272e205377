"""Where the data folders shipped with vqclip live: presets/ and augmentations/.

In a wheel they sit inside the package (vqclip/presets, vqclip/augmentations); in a source
checkout or an editable install they sit at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder `name` ('presets' or 'augmentations'), installed or in the source tree."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"vqclip's {name}/ folder is missing from {_PACKAGE}: reinstall vqclip")


def named_yaml_files(name: str) -> dict[str, Path]:
    """{stem: path} of the YAML files in the data folder `name`."""
    return {p.stem: p for p in sorted(data_dir(name).glob("*.yaml"))}
