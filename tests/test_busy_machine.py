"""The same command and seed give the same pixels alone and beside a busy process.

Each command runs as a user runs it: a `vqclip` process with the default thread count
(OMP_NUM_THREADS and the wait variables unset), once as the machine is, once beside a process
that keeps a core busy (which the command sees, and answers by letting its idle threads sleep).
The outputs are compared exactly: pixels, prior codes, trained weights.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_train import shapes_folder  # noqa: F401 (a fixture)

from vqclip.bench.concurrent import write_random_real_vqgan
from vqclip.machine import threads
from vqclip.outputs import read_jsonl


@contextlib.contextmanager
def busy_neighbour():
    """A process spinning on one core, already running (and seen) when the command starts."""
    spinner = subprocess.Popen([sys.executable, "-c", "import sys; print(flush=True); sys.stdout.close()\n"
                                "while True: pass"], stdout=subprocess.PIPE)
    try:
        spinner.stdout.readline()  # it has started; from here on it only spins
        assert threads.busy_elsewhere() >= 1
        yield
    finally:
        spinner.kill()
        spinner.wait()


def vqclip(*args: str) -> str:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("OMP_NUM_THREADS", *threads.WAIT_VARIABLES)}
    done = subprocess.run([sys.executable, "-m", "vqclip", *map(str, args)], env=environment, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr


def alone_and_busy(tmp_path: Path, command) -> tuple[Path, Path]:
    """Run `command(folder)` once as the machine is and once beside a busy process; the two folders."""
    alone, busy = tmp_path / "alone", tmp_path / "busy"
    command(alone)
    with busy_neighbour():
        command(busy)
    return alone, busy


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_shapes_run(tmp_path):
    alone, busy = alone_and_busy(tmp_path, lambda folder: vqclip(
        "a red circle on a blue background", "--preset", "shapes", "--seed", "3", "--steps", "8", "--quiet",
        "--run-dir", folder))
    assert np.array_equal(pixels(alone / "final.png"), pixels(busy / "final.png"))
    assert "threads: " + str(threads.usable_cores()) in (busy / "config.yaml").read_text()


def test_a_sweep_of_tiles_with_a_palette_and_symmetry(tmp_path):
    """The controls of issue 32 (wrapped cutouts, circular padding, the mirror and palette losses,
    an indexed PNG) and a sweep's resumed rounds."""
    alone, busy = alone_and_busy(tmp_path, lambda folder: vqclip(
        "sweep", "a red circle on a blue background", "--preset", "shapes", "--seed", "3", "--steps", "6",
        "--seeds", "3", "--keep", "1", "--quiet", "--out", folder, "tile=true", "symmetry=both",
        "palette.colours=['#dc1e1e', '#1e46dc']", "palette.quantize=true", "palette.dither=true"))
    def ranked(folder: Path) -> list[dict]:  # every round's scores and choices; the seconds differ, of course
        return [{key: value for key, value in record.items() if key != "seconds"}
                for record in read_jsonl(folder / "rounds.jsonl")]

    assert ranked(alone) == ranked(busy) and len(ranked(alone)) == 6
    for seed in (3, 4, 5):
        assert np.array_equal(pixels(alone / f"seed-{seed}" / "final-3x3.png"),
                              pixels(busy / f"seed-{seed}" / "final-3x3.png"))


def test_a_windowed_canvas_and_a_restyle_along_the_flow(tmp_path, write_clip):
    """A canvas larger than its window (fused attention, frozen statistics) and OpenCV's flow."""
    clip = write_clip(tmp_path / "clip.gif", 3)

    def both(folder: Path) -> None:
        vqclip("red circles on a blue background", "--preset", "shapes", "--size", "128", "128", "window=[64,64]",
               "init.mode=random", "--seed", "3", "--steps", "6", "--quiet", "--run-dir", folder / "canvas")
        vqclip("video", "restyle", clip, "a blue square", "-p", "shapes-zoom", "video.flow=true", "--seed", "3",
               "video.first_frame_steps=2", "video.steps_per_frame=2", "cutn=4", "--quiet", "-o", folder / "out",
               "--run-dir", folder / "video")

    alone, busy = alone_and_busy(tmp_path, both)
    assert np.array_equal(pixels(alone / "canvas" / "final.png"), pixels(busy / "canvas" / "final.png"))
    for frame in range(3):
        assert np.array_equal(pixels(alone / "out" / f"{frame:05d}.png"), pixels(busy / "out" / f"{frame:05d}.png"))


def test_a_run_of_the_real_architectures(tmp_path):
    config, checkpoint = write_random_real_vqgan(tmp_path)
    alone, busy = alone_and_busy(tmp_path, lambda folder: vqclip(
        "a lighthouse", "--seed", "1", "--steps", "1", "--size", "64", "64", "--quiet", "--run-dir", folder,
        "init.mode=random", f"vqgan.config={config}", f"vqgan.checkpoint={checkpoint}",
        "clip.models=[{name: ViT-B-32}]", "cutn=4", "save_every=0", "checkpoint_every=0"))
    assert np.array_equal(pixels(alone / "final.png"), pixels(busy / "final.png"))


def test_prior_samples(tmp_path):
    alone, busy = alone_and_busy(tmp_path, lambda folder: vqclip(
        "prior", "sample", "a green square on a white background", "-o", folder / "best.png", "--prior", "shapes",
        "-p", "shapes", "--num", "2", "--quiet"))
    for name in ("best.png", "best-0.png", "best-1.png"):
        assert np.array_equal(pixels(alone / name), pixels(busy / name))


def test_a_training_step(tmp_path, shapes_folder):  # noqa: F811
    alone, busy = alone_and_busy(tmp_path, lambda folder: vqclip(
        "train", "vqgan", shapes_folder, "--out", folder, "--quiet", "steps=2", "batch_size=4", "n_embed=32",
        "embed_dim=8", "z_channels=8", "ch=32", "disc_start=1", "disc_layers=1", "disc_ch=8", "held_out=4",
        "sample_every=100"))
    one, two = load_file(alone / "vqgan.safetensors"), load_file(busy / "vqgan.safetensors")
    assert one.keys() == two.keys() and all(torch.equal(one[name], two[name]) for name in one)


@pytest.mark.parametrize("asked", ["--threads", "threads="])
def test_another_count_than_the_default_is_said(tmp_path, asked):
    count = 1 if threads.usable_cores() > 1 else 2
    flag = ["--threads", str(count)] if asked == "--threads" else [f"threads={count}"]
    said = vqclip("a red circle", "--preset", "shapes", "--steps", "1", "--run-dir", tmp_path / "run", *flag)
    assert f"where this machine's default is {threads.usable_cores()}, so the pixels differ" in said
