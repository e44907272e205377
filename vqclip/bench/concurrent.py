"""`vqclip bench --concurrent K`: how well K runs share the machine when started at once.

Users start several runs at a time (batch workers, the web UI beside a terminal, a video and an
image). Each run here is a separate `vqclip` process, as a user would start it. The figures:

- single: one run alone on one thread: the run's work, in core-seconds;
- alone: one run alone as vqclip runs it (the thread policy's choice of threads);
- together: K runs started at once, until the last one finishes;
- ideal: K × single ÷ usable cores (at least single), the time that perfect sharing of the cores
  would take; ratio = together ÷ ideal.

`threads` fixes every run's thread count (OMP_NUM_THREADS), e.g. 2 on 2 cores to see what runs
did before vqclip chose their threads.

Workloads: `shapes` is the README's first command; `real` is a 128 px run of the real
architectures (vqgan_imagenet_f16_16384 + ViT-B/32), on random weights written once in the real
file layout, so nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UserError, unknown_choice
from ..machine.threads import usable_cores

WORKLOADS = ("shapes", "real")


def workload_command(name: str, folder: Path, steps: int) -> list[str]:
    """The vqclip command line of one run of the workload (its run folder is added per run)."""
    vqclip = [sys.executable, "-m", "vqclip"]
    if name == "shapes":
        return [*vqclip, "a red circle on a blue background", "--preset", "shapes", "--quiet", "--seed", "1",
                "--steps", str(steps)]
    if name == "real":
        config, checkpoint = write_random_real_vqgan(folder)
        return [*vqclip, "a red circle on a blue background", "--quiet", "--seed", "1", "--steps", str(steps),
                "--size", "128", "128", "init.mode=random", f"vqgan.config={config}",
                f"vqgan.checkpoint={checkpoint}", "clip.models=[{name: ViT-B-32}]", "cutn=32", "save_every=0",
                "checkpoint_every=0"]
    raise unknown_choice("bench workload", name, WORKLOADS)


def write_random_real_vqgan(folder: Path) -> tuple[Path, Path]:
    """vqgan_imagenet_f16_16384's YAML and a checkpoint of random weights in taming's key names."""
    import torch
    import yaml
    from safetensors.torch import save_file

    from ..models.registry import VQGANS
    from ..models.vqgan import build_vqgan, taming_state_dict, vqgan_spec_from_model_config

    config, checkpoint = folder / "vqgan.yaml", folder / "vqgan.safetensors"
    if not checkpoint.is_file():
        model = VQGANS["imagenet_f16_16384"].model
        torch.manual_seed(0)
        vqgan = build_vqgan(vqgan_spec_from_model_config(model, "imagenet_f16_16384"))
        config.write_text(yaml.safe_dump({"model": model}), encoding="utf-8")
        save_file({key: value.contiguous() for key, value in taming_state_dict(vqgan).items()}, str(checkpoint))
    return config, checkpoint


def timed_runs(command: list[str], folder: Path, count: int, environment: dict[str, str]) -> float:
    """Start `count` copies of `command` at once (each with its own run folder); seconds until all end."""
    started = time.perf_counter()
    processes = [subprocess.Popen([*command, "--run-dir", str(folder / f"run-{index}")], env=environment,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for index in range(count)]
    failures = []
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode:
            failures.append(stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}")
    if failures:
        raise UserError(f"a benchmark run failed: {failures[0]}")
    return time.perf_counter() - started


def concurrent(k: int, workload: str = "shapes", steps: int = 30, threads: int | None = None,
               folder: Path | None = None, progress=None) -> dict:
    """single, alone and K-at-once times of the workload, and the ratio against perfect sharing."""
    import tempfile

    if k < 1 or steps < 1:
        raise UserError(f"--concurrent and --steps must be at least 1, not {k} and {steps}")
    cores = usable_cores()
    base = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    fixed = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(folder or scratch)
        command = workload_command(workload, folder, steps)
        figures = {}
        for name, count, extra in (("single_s", 1, {"OMP_NUM_THREADS": "1"}), ("alone_s", 1, fixed),
                                   ("together_s", k, fixed)):
            figures[name] = timed_runs(command, folder / name, count, {**base, **extra})
            if progress:
                progress(f"{name.removesuffix('_s')}: {figures[name]:.1f} s")
    ideal = max(figures["single_s"], k * figures["single_s"] / cores)
    return {"workload": workload, "k": k, "cores": cores, "steps": steps, "threads": threads, **figures,
            "ideal_s": ideal, "ratio": figures["together_s"] / ideal}


def format_concurrent(result: dict) -> str:
    threads = f", {result['threads']} threads each" if result["threads"] else ""
    return (f"{result['k']} × {result['workload']} ({result['steps']} steps{threads}) on {result['cores']} cores: "
            f"together {result['together_s']:.1f} s, ideal {result['ideal_s']:.1f} s "
            f"(K × single {result['single_s']:.1f} s ÷ cores), ratio {result['ratio']:.2f}; "
            f"one alone {result['alone_s']:.1f} s")
