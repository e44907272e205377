"""The prior's token data: captioned images → VQGAN token grids + text tokens, in one cache file
(`vqclip train prior` writes OUT/data.pt).

Sources: any layout of captioned images that vqclip/data/pairs.py reads (same-name `.txt`
captions, a CSV/JSONL list, class sub-folders); images that cannot be read are skipped there.
The cache file (a torch pickle of plain tensors, lists and strings, read back
with the weights-only loader) holds the image tokens (int16, B × rows × columns), the captions,
their open_clip BPE ids (int32, B × L, padded with -1), and the VQGAN they were encoded with.
It is rewritten atomically every `save_every` images, so an interrupted build continues where
it stopped (`resume=True`): the source list must be the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_open
from ..errors import UserError
from ..models.checkpoint import load_file
from .tokenizer import clip_bpe_ids

FORMAT = "vqclip-prior-data/1"
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
        raise UserError(f"{path} is not a prior data file (vqclip train prior writes one as OUT/data.pt)")
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
