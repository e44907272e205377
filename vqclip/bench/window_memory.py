"""`vqclip bench --size S --window W`: the memory of a step on a canvas larger than memory.

Counted bytes at each step's peak (vqclip.machine.memory: every tensor the step creates, the same
on every machine) on random weights of the real architectures, a step being the decode, the
cutouts, CLIP and the backward pass:

- whole: a step that decodes a W × W picture (the size=auto run whose size is W);
- window: a step on an S × S canvas that decodes one W × W window (window=[W, W]);
- refresh: the whole S × S decode without gradients that renews the windows' statistics every
  window_refresh steps and draws the written pictures;

the last two with fused attention, as a run with a window computes; and how far a window's pixels
are from taming's whole decode (0 up to rounding).
"""

from __future__ import annotations

import torch

from ..controls.canvas import WindowedDecoder, decode_window, fused_attention, norm_statistics
from ..cutouts import make_cutouts
from ..errors import UserError
from ..machine.device import pick_device
from ..machine.memory import measure_peak_bytes
from .step import random_models


def canvas_memory(vqgan: str = "imagenet_f16_16384", clip: str = "ViT-B-32", size: int = 512, window: int = 256,
                  cutn: int = 32, device: str = "cpu", progress=None) -> dict:
    models = random_models(vqgan, clip, pick_device(device))
    factor = models.vqgan.factor
    if window <= 0 or window % factor or size % factor or not window < size:
        raise UserError(f"--window {window} must be smaller than --size {size}, both multiples of the VQGAN's "
                        f"factor {factor}")
    member = models.clip.members[0]
    generator = torch.Generator().manual_seed(0)

    def latent(side: int) -> torch.Tensor:
        codes = torch.randint(0, models.vqgan.n_embed, (1, side // factor, side // factor), generator=generator)
        return models.vqgan.tokens_to_z(codes).to(models.device)

    def step(decode, z: torch.Tensor):
        def run() -> None:
            leaf = z.clone().requires_grad_(True)
            image = decode(leaf)
            cutouts = make_cutouts(image, member.input_size, cutn, noise_fac=0, generator=generator)
            member.encode_image(cutouts).pow(2).mean().backward()
        return run

    report = {"vqgan": vqgan, "clip": clip, "size": size, "window": window, "cutn": cutn}
    say = progress or (lambda line: None)
    say(f"whole step at {window}×{window}")
    report["whole_mb"] = measure_peak_bytes(step(models.vqgan.decode, latent(window)), models.device) / 2**20
    canvas = latent(size)
    with fused_attention(models.vqgan):  # as a run with a window computes
        windowed = WindowedDecoder(models.vqgan, (window, window), refresh=10**9, generator=generator,
                                   quantize=lambda z: z)
        windowed(canvas, 0)  # the statistics, renewed here and not inside the measured step
        say(f"window step on {size}×{size}")
        report["window_mb"] = measure_peak_bytes(step(windowed, canvas), models.device) / 2**20

        def refresh() -> None:
            with torch.no_grad():
                norm_statistics(models.vqgan, canvas)

        say(f"whole decode of {size}×{size} without gradients")
        report["refresh_mb"] = measure_peak_bytes(refresh, models.device) / 2**20
        with torch.no_grad():
            whole = models.vqgan.decode(canvas)
            statistics = norm_statistics(models.vqgan, canvas)[1]
            cells = window // factor
            box = ((size // factor - cells) // 2,) * 2 + (cells, cells)
            crop = whole[..., box[0] * factor:(box[0] + cells) * factor, box[1] * factor:(box[1] + cells) * factor]
            report["window_difference"] = float((decode_window(models.vqgan, canvas, box, statistics) - crop).abs().max())
    report["ratio"] = max(report["window_mb"], report["refresh_mb"]) / report["whole_mb"]
    return report


def format_canvas(report: dict) -> str:
    pixels = (report["size"] / report["window"]) ** 2
    rows = [(f"whole step at {report['window']}×{report['window']}", f"{report['whole_mb']:.1f} MB"),
            (f"window step on {report['size']}×{report['size']} ({pixels:.0f}× the pixels)",
             f"{report['window_mb']:.1f} MB"),
            ("its whole decode without gradients", f"{report['refresh_mb']:.1f} MB"),
            ("the canvas's peak / the whole step's", f"{report['ratio']:.2f}"),
            ("a window against the whole decode (max)", f"{report['window_difference']:.1e}")]
    width = max(len(label) for label, _ in rows)
    return "\n".join([f"{report['vqgan']} + {report['clip']}, cutn {report['cutn']}; peak memory (counted tensors):",
                      *(f"  {label:<{width}}  {value:>10}" for label, value in rows)])
