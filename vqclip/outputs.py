"""The files vqclip writes and reads, a function per format: run folders, PNGs that carry their
settings, JSON/YAML, the JSON-lines log, latents, state files, and pictures read in.

Every write goes through vqclip.atomic (a reader sees the old file or the new one), except the
JSON-lines log, which grows by whole lines. torch is imported inside the functions that need
it, so that `import vqclip.outputs` stays cheap for the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from PIL import Image, ImageOps, PngImagePlugin

from .atomic import atomic_open, atomic_write_text
from .errors import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

METADATA_KEY = "vqclip"  # the PNG text chunk that holds the run's settings as JSON
MAX_IMAGE_PIXELS = 8192 * 8192  # ≈ 67 MP: far above any size VQGAN can handle, far below a bomb

# ---------------------------------------------------------------------------- run folders

# Windows refuses these as file or folder names, with or without an extension, in any case.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{p}{i}" for p in ("com", "lpt") for i in range(10)]
)


def _is_windows_reserved(name: str) -> bool:
    return name.split(".")[0].rstrip(" ").lower() in _WINDOWS_RESERVED


def slugify(text: str, max_len: int = 60) -> str:
    """A folder name from a prompt, valid on Windows, macOS and Linux: 'A Cat!' -> 'a-cat'.

    Only [a-z0-9-] survive (accents are stripped first, other non-ASCII text is dropped), so the
    name cannot hold a separator, a trailing dot or space, or differ only in case; a Windows
    reserved name gets a '_' appended. Longer than max_len: cut at a '-' where one is near.
    """
    if max_len < len("untitled"):
        raise ValueError(f"max_len must be at least 8, not {max_len}")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-.")
    if len(slug) > max_len:
        cut = slug.rfind("-", 0, max_len + 1)  # a '-' right after max_len chars is a clean cut too
        slug = slug[:cut] if cut >= max_len // 2 else slug[:max_len]
        slug = slug.strip("-")
    slug = slug or "untitled"
    if _is_windows_reserved(slug):  # reserved names are at most 4 chars, so this fits max_len
        slug += "_"
    return slug


_NUMBERED = re.compile(r"^(\d+)-")


def _highest_number(folder: Path) -> int:
    """The largest NNNN among folder's 'NNNN-...' entries (files too: a name is a name), or 0."""
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=0)


def new_run_dir(root: str | os.PathLike, prompt: str, *, now: _dt.datetime | None = None) -> Path:
    """Create and return root/YYYY-MM-DD/NNNN-<slug of prompt>/, NNNN one above the highest.

    Safe when several threads or processes start runs into the same root at once: mkdir without
    exist_ok is the arbiter, and whoever loses a number takes the next one.
    """
    day = Path(root) / (now or _dt.datetime.now()).strftime("%Y-%m-%d")
    try:
        day.mkdir(parents=True, exist_ok=True)
        number = _highest_number(day) + 1
        slug = slugify(prompt)
        while True:
            path = day / f"{number:04d}-{slug}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                number += 1
    except OSError as e:
        raise UserError(f"cannot create a run folder under {day}: {e.strerror or e}") from e


def prepare_run_dir(path: str | os.PathLike) -> Path:
    """A run folder the user chose (--run-dir): created if missing, reused if it exists."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"run folder {path} exists and is not a folder: choose another --run-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run folder {path}: {e.strerror or e}") from e
    return path


# ---------------------------------------------------------------------------- JSON, YAML, logs


def _plain(obj: Any) -> Any:
    """obj as dicts, lists, str, numbers, bools and None, which both JSON and YAML can write."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy and torch scalars and arrays
        return obj.tolist()
    return obj


def _json_line(data: Any) -> str:
    # Compact and UTF-8 (prompts in any script stay readable). A NaN loss is written as NaN:
    # Python reads it back, and refusing it would lose the record that shows the NaN.
    return json.dumps(_plain(data), ensure_ascii=False, separators=(",", ":"))


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(_plain(data), ensure_ascii=False, indent=2) + "\n")


def write_yaml(path: str | os.PathLike, data: dict) -> None:
    """config.yaml and friends: keys in the caller's order, non-ASCII text kept as is."""
    atomic_write_text(path, yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True))


def append_jsonl(path: str | os.PathLike, record: dict, *, fsync: bool = False) -> None:
    """Append one JSON line in one write, so that a killed process cuts at most that line."""
    data = (_json_line(record) + "\n").encode("utf-8")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o666)
    try:
        # A killed writer may have left half a line; start afresh so this record is not glued on.
        if os.fstat(fd).st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        while data:  # a short write happens only on a full disk; the loop then ends in OSError
            data = data[os.write(fd, data):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Rewrite a JSON-lines log as a whole, atomically (resuming drops the steps done again)."""
    atomic_write_text(path, "".join(_json_line(record) + "\n" for record in records))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log; lines cut short by a killed process are skipped."""
    records, damaged = [], []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                damaged.append(number)
    if damaged:
        log.warning("%s: skipped %d incomplete line(s): %s", path, len(damaged), damaged[:10])
    return records


# ---------------------------------------------------------------------------- images

# What PIL raises on files it cannot read: not an image, truncated, broken chunks, bombs.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError,
               Image.DecompressionBombError, Image.DecompressionBombWarning)


def to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.shape[2:] not in ((), (3,), (4,)) or image.ndim < 2:
            raise ValueError(f"a numpy image must be uint8 H×W×3, H×W×4 or H×W, "
                             f"not {image.dtype} {image.shape}")
        return Image.fromarray(image)
    import torch

    if isinstance(image, torch.Tensor):
        x = image.detach()
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"an image tensor must be 3×H×W or 1×3×H×W, not {tuple(image.shape)}")
        # [0,1] -> uint8 by clamping and rounding to nearest (ties to even); NaN -> 0 (black),
        # so that a run that diverged still leaves an image to look at.
        x = (torch.nan_to_num(x.float(), nan=0.0).clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(x.permute(1, 2, 0).cpu().numpy())
    raise TypeError(f"an image must be a tensor, a PIL image or a numpy array, not {type(image).__name__}")


def save_png(path: str | os.PathLike, image: Any, metadata: dict) -> None:
    """Write image as a PNG carrying `metadata` as compact JSON in an iTXt chunk named 'vqclip'.

    image: a float tensor 3×H×W or 1×3×H×W in [0,1] (clamped, then rounded to the nearest of
    the 256 levels), a uint8 numpy array H×W×C, or a PIL image. iTXt is always UTF-8, so
    prompts in any script survive; other tools show it as a text field named 'vqclip'.
    """
    pil = to_pil(image)
    if pil.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):  # modes PNG cannot hold
        pil = pil.convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_itxt(METADATA_KEY, _json_line(metadata))
    with atomic_open(path, "wb") as f:
        pil.save(f, format="PNG", pnginfo=info)


IMAGE_FORMATS = {"": "PNG", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # what an output file may be


def image_format(path: str | os.PathLike) -> str:
    """The format an output's suffix names (no suffix: PNG); any other suffix is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise UserError(f"{path}: vqclip writes .png or .jpg/.jpeg images, not {suffix} files")
    return IMAGE_FORMATS[suffix]


def save_image(path: str | os.PathLike, image: Any, metadata: dict) -> None:
    """Write the format the suffix names: a PNG (save_png), or a JPEG (quality 95) whose comment
    holds the same settings, so `vqclip info` and `--from` read either."""
    if image_format(path) == "PNG":
        save_png(path, image, metadata)
        return
    comment = f"{METADATA_KEY} {_json_line(metadata)}".encode()
    with atomic_open(path, "wb") as f:
        to_pil(image).convert("RGB").save(f, format="JPEG", quality=95, comment=comment)


def read_metadata(path: str | os.PathLike) -> dict:
    """The settings stored in a vqclip image by save_png or save_image."""
    try:
        with Image.open(path) as img:
            # save_png puts the chunk before the pixels, so img.info has it without decoding;
            # img.text also reads chunks after the pixels, where some editors move them.
            text = img.info.get(METADATA_KEY)
            if text is None and img.format == "PNG":
                text = img.text.get(METADATA_KEY)
            comment = img.info.get("comment", b"")
            if text is None and isinstance(comment, bytes) and comment.startswith(f"{METADATA_KEY} ".encode()):
                text = comment[len(METADATA_KEY) + 1:].decode("utf-8", errors="replace")
    except _PIL_ERRORS as e:
        raise UserError(f"cannot read image {path}: {e}") from e
    if text is None:
        raise UserError(f"{path} has no vqclip metadata: it was not made by vqclip")
    try:
        metadata = json.loads(text)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise UserError(f"{path} has a damaged vqclip metadata chunk")
    return metadata


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None, *,
               what: str = "init image") -> torch.Tensor:
    """An image file as a float tensor 1×3×H×W in [0,1]; size is (width, height) as in PIL.

    Transparent pixels are laid over white (what a viewer shows), EXIF rotation is applied, and
    resizing uses Lanczos (see `read_picture` for what is refused).
    """
    import torch

    with read_picture(path, what) as img:
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img.convert("RGBA"))
        img = img.convert("RGB")
        if size is not None and tuple(size) != img.size:
            img = img.resize(tuple(size), Image.Resampling.LANCZOS)
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8))  # a copy: torch wants it writable
    return pixels.permute(2, 0, 1).unsqueeze(0).float().div(255)


@contextlib.contextmanager
def read_picture(path: str | os.PathLike, what: str) -> Iterator[Image.Image]:
    """An image file decoded as PIL holds it, EXIF rotation applied, 16-bit grey brought to 8 bits.

    Images over MAX_IMAGE_PIXELS are refused from their header, before any pixel is decoded, so
    a tiny file that claims to be huge cannot exhaust memory; a file PIL cannot read (also while
    the caller converts it) is a UserError that names `what` it was meant to be.
    """
    too_large = f"{what} {path} is too large: the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} MP"
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UserError(f"{too_large}, it has {width}×{height}")
            img = ImageOps.exif_transpose(img)  # decodes the pixels
            if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: convert() would clip
                grey = (np.array(img, dtype=np.float64) / 257).round().clip(0, 255)
                img = Image.fromarray(grey.astype(np.uint8))
            yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{too_large} ({e})") from e
    except _PIL_ERRORS as e:
        raise UserError(f"cannot read {what} {path}: {e}") from e


# ---------------------------------------------------------------------------- versions


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict:
    """The versions that decide what a run produces, to store with its outputs."""
    import platform

    return {
        "vqclip": _version("vqclip"),
        "torch": _version("torch"),
        "open_clip": _version("open_clip_torch"),  # the distribution name differs from the module
        "kornia": _version("kornia"),
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------- state and latents


def previous_path(path: str | os.PathLike) -> Path:
    """Where save_state keeps the state before the newest: state.pt -> state.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _torch_save(obj: Any, f) -> None:
    import torch

    try:
        torch.save(obj, f)
    except RuntimeError as e:  # torch wraps a failed write (a full disk): hand back the OSError
        if isinstance(e.__context__, OSError):
            raise e.__context__ from e
        raise


def save_state(path: str | os.PathLike, state: dict) -> None:
    """torch.save `state` to path, moving the state it replaces to state.prev.pt.

    Order of events: the new state is written and flushed to a temporary file; only then is
    the current file renamed to .prev, and the temporary file renamed into place. At every
    moment (a kill, a full disk) at least one complete state exists on disk.
    """
    path = Path(path)
    with atomic_open(path, "wb") as f:
        _torch_save(state, f)
        f.flush()
        os.fsync(f.fileno())  # the new state is safe before the old one moves aside
        if path.exists():
            os.replace(path, previous_path(path))


def _load(path: str | os.PathLike, what: str, kind: type) -> Any:
    """torch.load without running pickled code; a missing or damaged file is a UserError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} at {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # garbage makes torch.load raise anything: KeyError, EOFError, ...
        reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        raise UserError(f"{path} is damaged or is not a vqclip {what} file ({reason})") from e
    if not isinstance(loaded, kind):
        raise UserError(f"{path} is not a vqclip {what} file (it holds a {type(loaded).__name__})")
    return loaded


def load_state(path: str | os.PathLike) -> dict:
    """The state save_state wrote; if it is damaged, the error points to state.prev.pt."""
    try:
        return _load(path, "state", dict)
    except UserError as e:
        prev = previous_path(path)
        if prev.is_file():
            raise UserError(f"{e}; the previous state {prev} is there: resume from it") from e
        raise


def load_state_or_previous(path: str | os.PathLike) -> dict:
    """The newest state at path, or, if it is missing or damaged, the one before it."""
    prev = previous_path(path)
    try:
        return _load(path, "state", dict)
    except UserError as newest:
        if not prev.is_file():
            raise
        try:
            state = _load(prev, "state", dict)
        except UserError as e:
            raise UserError(f"{newest}; and the previous one: {e}") from e
        log.warning("%s; falling back to the previous state %s", newest, prev)
        return state


def save_latent(path: str | os.PathLike, z: torch.Tensor) -> None:
    # clone: torch.save writes a view's whole storage, e.g. a batch where one latent was meant
    with atomic_open(path, "wb") as f:
        _torch_save(z.detach().cpu().clone(), f)


def load_latent(path: str | os.PathLike) -> torch.Tensor:
    import torch

    return _load(path, "latent", torch.Tensor)
