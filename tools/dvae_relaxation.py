"""The measurement behind relaxation.kind's default (docs/experiments.md, 2026-11-30).

    python tools/dvae_relaxation.py train OUT     # a tiny dVAE trained on the shapes world (minutes, CPU)
    python tools/dvae_relaxation.py compare OUT   # softmax vs gumbel with the shapes CLIP, a few seeds

The dVAE has the published files' architecture at a small width (vqclip.models.dvae), trained as
DALL-E's was in outline: the encoder's logits relaxed by a Gumbel-softmax whose temperature falls,
a reconstruction loss, and a KL pull toward the uniform prior over codes that keeps codes in use.
Its weights are saved as a plain state dict with the package's names (`OUT/decoder.pt`,
`OUT/encoder.pt`), which `vqgan.format=dvae` loads as it loads the published pickles.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vqclip.models import dvae
from vqclip.shapes import world

WIDTH = dict(n_hid=32, n_blk_per_group=1, vocab_size=512)
TRAIN_STEPS, BATCH, LR, KL_WEIGHT = 600, 16, 2e-3, 0.01
PROMPTS = ["a red circle on a white background", "a blue square on a yellow background",
           "a green triangle on a purple background", "an orange circle on a blue background"]
SEEDS = (1, 2, 3)
RUN = dict(size=[64, 64], cutn=16, augmentations="light", steps=100, save_every=0, checkpoint_every=0,
           quiet=True, precision="fp32", device="cpu", clip={"models": [{"name": "shapes", "weight": 1.0}]})


def train(out: Path) -> None:
    torch.manual_seed(0)
    rng = world.make_rng(0)
    encoder, decoder = dvae.Encoder(**WIDTH), dvae.Decoder(n_init=64, **WIDTH)
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=LR)
    start = time.perf_counter()
    for step in range(TRAIN_STEPS):
        images = world.batch(rng, BATCH)[0]
        logits = encoder(dvae.map_pixels(images))
        temperature = 1.0 * (1 / 16) ** (step / (TRAIN_STEPS - 1))
        codes = F.gumbel_softmax(logits, tau=temperature, dim=1)
        reconstruction = torch.sigmoid(decoder(codes)[:, :3])
        target = dvae.map_pixels(images)
        recon = F.l1_loss(reconstruction, target) + F.mse_loss(reconstruction, target)
        log_q = logits.log_softmax(1)
        kl = (log_q.exp() * (log_q + math.log(WIDTH["vocab_size"]))).sum(1).mean()
        loss = recon + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == TRAIN_STEPS - 1:
            print(f"step {step} recon {recon.item():.4f} kl {kl.item():.3f} t {temperature:.3f} "
                  f"{time.perf_counter() - start:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(decoder.state_dict(), out / "decoder.pt")
    torch.save(encoder.state_dict(), out / "encoder.pt")
    model = dvae.load_dvae(out / "decoder.pt", out / "encoder.pt")
    held = torch.stack([world.to_tensor(image) for image, _, _ in world.held_out(128)])
    with torch.no_grad():
        z = model.encode(held)
        mse = F.mse_loss(model.decode(model.quantize(z)), held, reduction="none").mean((1, 2, 3))
    report = {"psnr_db": round((10 * torch.log10(1 / mse)).mean().item(), 2),
              "codes_used": int(z.argmax(1).unique().numel()), "train_seconds": round(time.perf_counter() - start)}
    print(json.dumps(report))
    (out / "train.json").write_text(json.dumps(report))


def compare(out: Path) -> None:
    from vqclip.config import build_config
    from vqclip.generation import generate
    from vqclip.loading import load_models
    from vqclip.shapes import judge

    vqgan = {"format": "dvae", "checkpoint": str(out / "decoder.pt"), "encoder": str(out / "encoder.pt")}
    models = load_models(build_config(None, {**RUN, "vqgan": vqgan}), torch.device("cpu"))
    rows = []
    for kind, lr in (("softmax", 0.1), ("softmax", 0.5), ("gumbel", 0.1), ("gumbel", 0.5)):
        for prompt in PROMPTS:
            for seed in SEEDS:
                start = time.perf_counter()
                result = generate(prompt, preset=None, models=models, seed=seed, lr=lr, vqgan=vqgan,
                                  relaxation={"kind": kind}, run_dir=str(out / "runs" / f"{kind}-{lr}-{seed}-{prompt}"),
                                  **RUN)
                verdict = judge.score_against(judge.judge(result.images[0]), prompt)
                rows.append({"kind": kind, "lr": lr, "prompt": prompt, "seed": seed, "score": result.scores[0],
                             **verdict, "seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(rows[-1]), flush=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1))
    for kind, lr in dict.fromkeys((row["kind"], row["lr"]) for row in rows):
        mine = [row for row in rows if (row["kind"], row["lr"]) == (kind, lr)]
        scores = torch.tensor([row["score"] for row in mine])
        rates = {key: sum(bool(row[key]) for row in mine) / len(mine) for key in ("colour", "shape", "background")}
        print(f"{kind:8s} lr {lr}: score {scores.mean():.3f} ± {scores.std():.3f} (min {scores.min():.3f}), "
              f"c/s/b {rates['colour']:.0%}/{rates['shape']:.0%}/{rates['background']:.0%}, "
              f"{sum(row['seconds'] for row in mine) / len(mine):.1f} s a run")


if __name__ == "__main__":
    {"train": train, "compare": compare}[sys.argv[1]](Path(sys.argv[2]))
