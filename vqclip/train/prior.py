"""`vqclip train prior DATA --vqgan V --out DIR`: encode a captioned folder and train a BART prior, in one command.

The two steps of `vqclip prior build-data` + `vqclip prior train`, over the same data layer as the
other recipes: (1) the images, brought to `size`, are encoded with the VQGAN into DIR/data.pt and
the held-out ones into DIR/held-out.pt (kept: a rerun or `--resume` encodes nothing again);
(2) vqclip.prior.train fits the prior (settings: its TrainConfig keys, e.g. steps=2000 width=256);
(3) at each held-out evaluation (`eval_every`) a grid of samples for four held-out captions goes to
DIR/samples/step-NNNNNN.png. The result is DIR/prior.json + DIR/prior.safetensors, usable as
`init.prior=DIR`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import distributed
from ..errors import UserError
from ..outputs import write_json
from ..prior import data as prior_data
from ..prior.train import TrainConfig
from ..prior.weights import LoadedPrior
from .common import save_grid, training_data

SAMPLE = {"supercondition": 2.0, "top_k": 16, "temperature": 0.7}  # recommended in prior.json (a sweep on shapes)


def load_vqgan(spec: str, device="cpu"):
    """The VQGAN to write tokens for: a folder from `vqclip train vqgan`, or a VQGAN name."""
    from ..models.registry import VQGANS, load_vqgan_from_config
    from ..models.vqgan import load_vqgan as load_files

    folder = Path(spec)
    if (folder / "vqgan.yaml").is_file():
        return load_files(folder / "vqgan.yaml", folder / "vqgan.safetensors", device)
    if spec in VQGANS:
        return load_vqgan_from_config({"name": spec}, device)
    raise UserError(f"--vqgan {spec!r} is neither a folder with vqgan.yaml (from vqclip train vqgan) nor a VQGAN "
                    f"name ({', '.join(VQGANS)})")


def encode(images, vqgan, description: dict, out: Path, *, resume: bool, progress: bool) -> prior_data.PriorData:
    """`images` (an ImageSet) as VQGAN tokens in `out`, reused when it holds the same images."""
    if out.exists():
        stored = prior_data.load_data(out)
        if stored.sources == images.sources and stored.vqgan == description:
            return stored

    def batches(start: int, batch_size: int = 64):
        for first in range(start, len(images), batch_size):
            yield images.floats(slice(first, first + batch_size)), images.captions[first:first + batch_size]

    return prior_data.build_data(batches, images.sources, vqgan, description, out, resume=resume or out.exists(),
                                 progress=progress)


def default_size(vqgan: str) -> int:
    """The side the VQGAN was trained at: from its folder's vqgan.yaml, else 256 (the named VQGANs')."""
    from ..models.vqgan import read_taming_config

    config = Path(vqgan) / "vqgan.yaml"
    return int(read_taming_config(config)["ddconfig"].get("resolution", 256)) if config.is_file() else 256


def train(data: str | Path, out: str | Path, config: TrainConfig, *, vqgan: str, size: int | None = None,
          held_out: str | Path | None = None, template: str | None = None, resume: bool = False,
          device: str = "cpu", progress: bool = True) -> dict:
    """Encode, train, sample; returns the metrics (also OUT/prior-metrics.json)."""
    from ..prior import train as prior_train

    out, size = Path(out), size or default_size(vqgan)
    ranks, device = distributed.start(device, config.batch_size)
    progress = progress and ranks.main
    model = load_vqgan(vqgan, device)
    if size % model.factor:
        raise UserError(f"size={size} is not a multiple of the VQGAN's factor {model.factor}")
    train_set, held, report = training_data(data, size, held_out=held_out, held_out_count=config.eval_items,
                                            template=template, progress=progress)
    description = {"vqgan": str(vqgan), "size": size, "codebook_size": int(model.n_embed), "factor": int(model.factor)}
    with distributed.main_first(ranks):  # rank 0 encodes; the others find its files
        tokens = encode(train_set, model, description, out / "data.pt", resume=resume, progress=progress)
        held_tokens = encode(held, model, description, out / "held-out.pt", resume=resume, progress=progress)
    captions = sorted(set(held.captions))[:4]

    def samples(step: int, prior, tokenizer) -> None:
        grid = sample_grid(LoadedPrior(prior, tokenizer, {"sample": SAMPLE}), model, captions, config.seed)
        save_grid(out / "samples" / f"step-{step:06d}.png", grid,
                  {"recipe": "prior", "step": step, "rows": captions})

    metrics = prior_train.train(tokens, out, config, held_out=held_tokens, resume=resume, progress=progress,
                                device=device, info={"recipe": "vqclip train prior", "sample": SAMPLE},
                                log=lambda line: None, on_eval=samples)
    metrics.update(report)
    if ranks.main:
        write_json(out / "prior-metrics.json", metrics)
    return metrics


@torch.no_grad()
def sample_grid(prior, vqgan, captions: list[str], seed: int, count: int = 6) -> list[torch.Tensor]:
    """A row of `count` samples (the prior alone, no CLIP) per caption."""
    from ..prior.sample import sample_images, settings_for

    return [sample_images(prior, vqgan, caption, settings_for(prior, count=count, seed=seed + index)).images
            for index, caption in enumerate(captions)]
