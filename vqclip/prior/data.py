"""`vqclip prior build-data`: captioned images → VQGAN token grids + text tokens, in one cache file.

Sources: a folder of images whose captions are same-name `.txt` files, or a CSV (columns
`image`/`path` and `caption`/`text`) or JSONL (the same keys) whose relative paths are read from
the list's folder. The cache file (a torch pickle of plain tensors, lists and strings, read back
with the weights-only loader) holds the image tokens (int16, B × rows × columns), the captions,
their open_clip BPE ids (int32, B × L, padded with -1), and the VQGAN they were encoded with.
It is rewritten atomically every `save_every` images, so an interrupted build continues where
it stopped (`resume=True`): the source list must be the same.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_open
from ..errors import UserError
from ..models.checkpoint import load_file
from .tokenizer import clip_bpe_ids

FORMAT = "vqclip-prior-data/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_BPE = 62  # BPE ids kept per caption: room for begin and end in a 64-token encoder


@dataclass
class PriorData:
    image_tokens: torch.Tensor  # N × rows × columns, int16
    captions: list[str]
    text_bpe: torch.Tensor  # N × MAX_BPE, int32, -1 = nothing
    vqgan: dict  # the VQGAN's description: name/config, codebook size, factor
    sources: list[str]

    def bpe_rows(self, indices) -> list[list[int]]:
        rows = self.text_bpe[indices]
        return [[int(t) for t in row if t >= 0] for row in rows]


def read_pairs(source: str | Path) -> list[tuple[str, str]]:
    """(image path, caption) from a folder with .txt captions, a .csv or a .jsonl list."""
    source = Path(source)
    if source.is_dir():
        return _pairs_from_folder(source)
    if not source.is_file():
        raise UserError(f"{source} is neither a folder of images nor a CSV/JSONL list")
    return _pairs_from_list(source, _read_records(source))


def _pairs_from_folder(folder: Path) -> list[tuple[str, str]]:
    """Each image with a same-name .txt caption beside it; images without one are left out."""
    pairs = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        text = image.with_suffix(".txt")
        if text.is_file():
            pairs.append((str(image), text.read_text(encoding="utf-8", errors="replace").strip()))
    if not pairs:
        raise UserError(f"{folder} holds no images with a same-name .txt caption (a.png + a.txt)")
    return pairs


def _read_records(source: Path) -> list:
    """The rows of a .csv (as dicts) or the values of a .jsonl file (dicts, if it is well formed)."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {source}: {exc}") from None
    if source.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if source.suffix.lower() in (".jsonl", ".json"):
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UserError(f"{source} is not JSON lines: {exc}") from None
    raise UserError(f"{source}: give a folder, a .csv or a .jsonl file")


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


def bpe_tensor(captions: list[str]) -> torch.Tensor:
    out = torch.full((len(captions), MAX_BPE), -1, dtype=torch.int32)
    for i, caption in enumerate(captions):
        ids = clip_bpe_ids(caption)[:MAX_BPE]
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
    return out


@torch.no_grad()
def encode_tokens(vqgan, images: torch.Tensor) -> torch.Tensor:
    """Images B × 3 × H × W in [0, 1] → the VQGAN's token grids, int16."""
    device = next(vqgan.parameters()).device
    return vqgan.z_to_tokens(vqgan.encode(images.to(device))).to("cpu", torch.int16)


def save_data(path: str | Path, data: PriorData, total: int) -> None:
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, "image_tokens": data.image_tokens, "captions": data.captions,
                    "text_bpe": data.text_bpe, "vqgan": data.vqgan, "sources": data.sources, "total": total}, f)


def load_data(path: str | Path) -> PriorData:
    stored = load_file(path)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        raise UserError(f"{path} is not a prior data file (make one with: vqclip prior build-data)")
    return PriorData(stored["image_tokens"], list(stored["captions"]), stored["text_bpe"],
                     dict(stored["vqgan"]), list(stored["sources"]))


def build_data(batches, sources: list[str], vqgan, vqgan_info: dict, out: str | Path, *, resume: bool = False,
               save_every: int = 1024, progress: bool = True) -> PriorData:
    """Encode `batches(start)` — an iterator of (images, captions) for `sources[start:]` — into `out`.
    With resume, the items already in `out` are skipped (they must be the first of `sources`)."""
    total = len(sources)
    out = Path(out)
    data = PriorData(torch.zeros(0, 0, 0, dtype=torch.int16), [], torch.zeros(0, MAX_BPE, dtype=torch.int32),
                     vqgan_info, [])
    if out.exists():
        if not resume:
            raise UserError(f"{out} exists: pass --resume to continue it, or choose another file")
        data = load_data(out)
        if data.vqgan != vqgan_info:
            raise UserError(f"{out} was encoded with another VQGAN ({data.vqgan}); choose another file")
        if data.sources != sources[:len(data.sources)]:
            raise UserError(f"{out} was built from other images; choose another file")
    start = len(data.captions)
    chunks, unsaved = [data.image_tokens] if start else [], 0
    bar = tqdm(total=total, initial=start, disable=not progress, unit="img", desc="encoding")
    for images, captions in batches(start):
        chunks.append(encode_tokens(vqgan, images))
        data.captions += list(captions)
        data.sources += sources[len(data.sources):len(data.sources) + len(captions)]
        data.text_bpe = torch.cat([data.text_bpe, bpe_tensor(list(captions))])
        unsaved += len(captions)
        bar.update(len(captions))
        if unsaved >= save_every:
            data.image_tokens, unsaved = torch.cat(chunks), 0
            chunks = [data.image_tokens]
            save_data(out, data, total)
    bar.close()
    data.image_tokens = torch.cat(chunks) if chunks else data.image_tokens
    save_data(out, data, total)
    return data


def file_batches(pairs: list[tuple[str, str]], size: int, batch_size: int = 32):
    """`batches(start)` for build_data over image files, resized to size × size."""
    from ..outputs import load_image

    def batches(start: int):
        for first in range(start, len(pairs), batch_size):
            chunk = pairs[first:first + batch_size]
            images = torch.cat([load_image(path, (size, size), what="training image") for path, _ in chunk])
            yield images, [caption for _, caption in chunk]

    return batches
