"""The package's layout stays readable: few top-level modules, one meaning per module name, each
command-line flag declared once, every package shipped in the wheel."""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

import vqclip

ROOT = Path(vqclip.__file__).parent

# Names that more than one module or package carries, each with the one meaning they share.
SHARED_NAMES = {
    "data": "training data: the data layer (data/), a world's (digits/, shapes/), the prior's token files",
    "evaluate": "a world's grading of what a preset draws (digits/, shapes/)",
    "judge": "a world's judge of an image's pixels (digits/, shapes/)",
    "clip": "the CLIP model: loaded (models/), trained (train/)",
    "vqgan": "the VQGAN: loaded (models/), trained (train/)",
    "prior": "the BART prior: the package, and its training recipe (train/)",
    "commands": "a family's commands as Python functions (prior/, video/)",
}


def names() -> dict[str, list[str]]:
    """{module or package name: where it is} over vqclip/ (data folders excluded)."""
    found: dict[str, list[str]] = {}
    for path in ROOT.rglob("*.py"):
        if "presets" in path.parts or "augmentations" in path.parts:
            continue
        name = path.parent.name if path.name == "__init__.py" else path.stem
        if name not in ("__main__", "vqclip"):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_top_level_holds_at_most_twenty_modules():
    modules = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(modules) <= 20, modules


def test_no_module_name_means_two_things():
    repeated = {name: where for name, where in names().items() if len(where) > 1}
    assert set(repeated) <= set(SHARED_NAMES), {n: w for n, w in repeated.items() if n not in SHARED_NAMES}


def option_strings(path: Path) -> list[str]:
    """The option strings (`--out`, `-p`) of every add_argument call in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found += [arg.value for arg in node.args if isinstance(arg, ast.Constant) and arg.value.startswith("-")]
    return found


def test_each_command_line_flag_is_declared_once():
    from vqclip.cli.flags import FLAGS

    declared = [option for path in (ROOT / "cli").glob("*.py") for option in option_strings(path)]
    declared += [option for options, _ in FLAGS.values() for option in options if option.startswith("-")]
    twice = sorted({option for option in declared if declared.count(option) > 1})
    assert twice == [], f"declared more than once: {twice} (a shared flag belongs in vqclip/cli/flags.py)"
    assert len(declared) > 60


def test_every_package_is_shipped():
    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(("vqclip", *p.parent.relative_to(ROOT).parts)).rstrip(".") for p in ROOT.rglob("__init__.py")}
    assert packages - listed == set()
