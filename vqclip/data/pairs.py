"""(image path, caption) pairs from the three layouts people keep captioned images in.

1. A folder of images, each with a same-name `.txt` caption beside it (the LAION/webdataset way).
2. A `.csv` (columns `image`/`path` and `caption`/`text`) or `.jsonl` list (the same keys); relative
   image paths are read from the list's folder.
3. A folder of class sub-folders (`cat/`, `dog/`, ...): the folder's name fills a caption template
   (`"a photo of {}"`; underscores read as spaces).

Only paths and captions are read here; whether an image decodes is images.py's business.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LIST_SUFFIXES = (".csv", ".jsonl", ".json")
DEFAULT_TEMPLATE = "{}"


def read_pairs(source: str | Path, template: str | None = None) -> list[tuple[str, str]]:
    """(image path, caption) from a folder (.txt captions or class sub-folders), a .csv or a .jsonl list."""
    source = Path(source)
    if template is not None and "{}" not in template:
        raise UserError(f"--template {template!r} needs a {{}} where the class name goes, e.g. 'a photo of {{}}'")
    if source.is_dir():
        if template is None and _images(source):
            return _pairs_from_folder(source)
        return _pairs_from_classes(source, template or DEFAULT_TEMPLATE)
    if not source.is_file():
        raise UserError(f"{source} is neither a folder of images nor a CSV/JSONL list")
    return _pairs_from_list(source, _read_records(source))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))


def _pairs_from_folder(folder: Path) -> list[tuple[str, str]]:
    """Each image with a same-name .txt caption beside it; images without one are left out."""
    pairs = []
    for image in _images(folder):
        text = image.with_suffix(".txt")
        if text.is_file():
            pairs.append((str(image), text.read_text(encoding="utf-8", errors="replace").strip()))
    if not pairs:
        raise UserError(f"{folder} holds no images with a same-name .txt caption (a.png + a.txt)")
    return pairs


def _pairs_from_classes(folder: Path, template: str) -> list[tuple[str, str]]:
    """Every image in each sub-folder, captioned by the template filled with the sub-folder's name."""
    pairs = [(str(image), template.replace("{}", sub.name.replace("_", " ")))
             for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
             for image in _images(sub)]
    if not pairs:
        raise UserError(f"{folder} holds no images with a same-name .txt caption (a.png + a.txt) and no class "
                        "sub-folders of images (captioned by --template, e.g. 'a photo of {}')")
    return pairs


def _read_records(source: Path) -> list:
    """The rows of a .csv (as dicts) or the values of a .jsonl file (dicts, if it is well formed)."""
    suffix = source.suffix.lower()
    if suffix not in LIST_SUFFIXES:  # before reading: an image read as text is a UTF-8 error that says nothing
        what = "one image" if suffix in IMAGE_SUFFIXES else f"a {suffix or 'suffix-less'} file"
        raise UserError(f"{source} is {what}: the data must be a folder of captioned images (a.png beside a.txt, "
                        "or class sub-folders) or a .csv/.jsonl list of image and caption")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {source}: {exc}") from None
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"{source} is not JSON lines: {exc}") from None


def _pairs_from_list(source: Path, records: list) -> list[tuple[str, str]]:
    """(image, caption) of each record; relative image paths are read from the list's folder."""
    pairs = []
    for number, record in enumerate(records, 1):
        record = record if isinstance(record, dict) else {}  # a JSON line may hold a list or a number
        image = record.get("image") or record.get("path")
        caption = record.get("caption", record.get("text"))
        if not image or caption is None:
            raise UserError(f"{source} entry {number} needs an image (or path) and a caption (or text)")
        path = Path(image) if Path(image).is_absolute() else source.parent / image
        pairs.append((str(path), str(caption)))
    if not pairs:
        raise UserError(f"{source} lists no images")
    return pairs


def write_pair(folder: Path, name: str, image, caption: str) -> None:
    """One captioned image in the layout read_pairs reads: FOLDER/NAME.png + FOLDER/NAME.txt, each
    written atomically (`image`: a PIL image)."""
    import io

    from ..atomic import atomic_write_bytes, atomic_write_text

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(folder / f"{name}.png", buffer.getvalue())
    atomic_write_text(folder / f"{name}.txt", caption + "\n")
