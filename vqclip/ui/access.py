"""Who may use the page, and what a visitor may point the server at.

Whoever can open the page runs jobs with the server's rights on its files, so, as other
self-hosted tools do:

- Listening beyond loopback needs a login (`--auth USER:PASS`, `--auth-file FILE`) unless the
  person who starts the server says `--no-auth` on purpose.
- A setting from the page that names a file or folder a run reads is taken only when it lies under
  the outputs folder or in Gradio's upload cache (what was uploaded through the page), checked after
  symlinks and `..` are resolved. The settings that only choose where to write (`run_dir`,
  `outputs_root`, `output`) are the server's alone. Registry names (`vqgan.name=shapes`, a shipped
  preset or augmentation pipeline, a prior name, a CLIP model name or tag) name no file and stay
  allowed.

Nothing here imports Gradio: the page passes in its upload folder.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import preset_names
from ..errors import UserError, unknown_choice

WRITE_KEYS = ("run_dir", "outputs_root", "output")  # where runs are written: the server decides
# Keys whose value is always a path; paths_read_by adds those that hold a registry name or a path.
ALWAYS_PATHS = ("vqgan.config", "vqgan.checkpoint", "vqgan.encoder", "init.image", "init.latent", "init.tokens",
                "mask.image", "palette.image")


# -- logins -------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_login(text: str, where: str = "--auth") -> tuple[str, str]:
    """'USER:PASS' -> (user, password); the password may hold colons. Errors never echo it."""
    user, colon, password = text.partition(":")
    if not colon or not user.strip() or not password:
        raise UserError(f"{where} must be USER:PASS: a user name, a colon and a password")
    return user.strip(), password


def read_logins(auth: list[str], auth_file: str | None = None) -> list[tuple[str, str]]:
    """The (user, password) pairs of `--auth` values and an `--auth-file` of USER:PASS lines."""
    logins = [parse_login(text) for text in auth]
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --auth-file {auth_file}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        found = [parse_login(line.strip(), f"--auth-file {auth_file} line {number}")
                 for number, line in enumerate(text.splitlines(), 1)
                 if line.strip() and not line.strip().startswith("#")]
        if not found:
            raise UserError(f"--auth-file {auth_file} holds no USER:PASS line")
        logins += found
    users = [user for user, _ in logins]
    twice = sorted({user for user in users if users.count(user) > 1})
    if twice:  # Gradio would keep one password silently
        raise UserError(f"user {twice[0]!r} is given more than once in --auth/--auth-file")
    return logins


def check_listening(host: str, logins: list[tuple[str, str]] | None, no_auth: bool) -> None:
    """Beyond loopback, a login or an explicit --no-auth; never both."""
    if logins and no_auth:
        raise UserError("--no-auth and --auth/--auth-file contradict each other: give one of them")
    if not logins and not no_auth and not is_loopback(host):
        raise UserError(f"--host {host} lets other machines open the page, which runs jobs and reads files here: "
                        "add --auth USER:PASS (or --auth-file FILE), or --no-auth to let anyone who can reach it in")


# -- what the page may name ---------------------------------------------------------------------
def shipped_preset(name: str) -> str:
    """The page offers shipped presets only: a preset file is a path like any other."""
    names = preset_names()
    if name not in names:
        raise unknown_choice("preset", str(name), names)
    return name


def paths_read_by(config: DictConfig) -> list[tuple[str, str]]:
    """(key, value) for every setting of `config` that a run opens as a file or folder.

    This is the list of path-valued keys: a new one in the config schema must be added here. Each
    rule is the one the key's loader applies to tell a registry name, which names no file, from a path.
    """
    from ..models.registry import PRIORS
    from ..prompts import parse_image_prompt
    from ..resources import named_yaml_files

    found = [(key, OmegaConf.select(config, key)) for key in ALWAYS_PATHS]
    if config.init.prior not in PRIORS:  # a prior name, else a folder
        found.append(("init.prior", config.init.prior))
    if isinstance(config.augmentations, str) and config.augmentations not in named_yaml_files("augmentations"):
        found.append(("augmentations", config.augmentations))  # a shipped name, a YAML path or an inline list
    found += [("image_prompts", parse_image_prompt(text).text) for text in config.image_prompts]
    for index, model in enumerate(config.clip.models):
        if str(model.name).lower().endswith(".json"):  # else an open_clip or bundled model name
            found.append((f"clip.models[{index}].name", model.name))
        if model.pretrained and _may_name_a_file(str(model.pretrained)):  # else an open_clip tag
            found.append((f"clip.models[{index}].pretrained", model.pretrained))
    return [(key, str(value)) for key, value in found if value]


def _may_name_a_file(value: str) -> bool:
    # clip.models[].pretrained is a weight file whenever one exists by that name, else a tag
    return any(mark in value for mark in ("/", "\\", "~")) or Path(value).exists()


def check_page_path(key: str, value: str, roots: list[Path]) -> None:
    """A path from the page must lie under one of `roots` (resolved), however its loader reads it."""
    try:
        # Some loaders expand ~ and some do not: both readings must lie under a root.
        readings = {Path(value).resolve(), Path(value).expanduser().resolve()}
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        readings = set()
    if not readings or not all(any(path.is_relative_to(root) for root in roots) for path in readings):
        raise UserError(f"{key} {value[:100]!r}: the page only takes files from the outputs folder or uploaded "
                        "through the page (use the command line for other files)")


def check_page_config(config: DictConfig, outputs_root: str | Path, upload_root: str | Path | None) -> None:
    """Refuse a config from the page that writes outside the server's outputs folder, or reads a
    file outside it and outside the upload cache (None: the page took no uploads)."""
    for key in WRITE_KEYS:
        server_value = str(outputs_root) if key == "outputs_root" else None
        if OmegaConf.select(config, key) != server_value:
            raise UserError(f"{key} cannot be set from the page: the server writes every run under its "
                            "outputs folder")
    roots = [Path(root).resolve() for root in (outputs_root, upload_root) if root is not None]
    for key, value in paths_read_by(config):
        check_page_path(key, value, roots)
