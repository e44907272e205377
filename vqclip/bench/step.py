"""`vqclip bench`: time the optimisation step, stage by stage, against the classic scripts' step.

Both steps run in the same process, on the same random-weight networks of the real architectures
(from the registry's configs, so nothing is downloaded), at the same size and cutn, interleaved
step by step so that a busy machine slows both alike:

- fast: what `vqclip.generate` runs: the frozen networks in the precision `auto` picks (bf16
  copies under autocast where the hardware has bf16), all cutouts in one batched resample.
- baseline: the classic notebooks' step: fp32, a Python loop that crops and resizes each cutout,
  the Kornia pipeline applied to the batch.

Stages: decode (quantise + VQGAN decoder), cutouts, augment (Kornia + noise), clip (encoder +
loss), backward, optimizer (Adam + clamp). Peak memory: the process's resident set on CPU (sampled
during each path's steps, after returning freed memory to the OS), max allocated on CUDA.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import statistics
import threading
import time

import torch

from ..cutouts import build_augmentations, crop_and_resize, make_cutouts, sample_cutout_boxes
from ..errors import UserError, unknown_choice
from ..machine.precision import autocast, resolve_precision
from ..prompts import EmbeddingPrompt

STAGES = ("decode", "cutouts", "augment", "clip", "backward", "optimizer")


def random_models(vqgan_name: str, clip_name: str, device: torch.device):
    """The named architectures with random weights (bundled models load their shipped weights)."""
    from ..loading import Models
    from ..models.clip import ClipEnsemble, load_clip
    from ..models.registry import BUNDLED_CLIPS, VQGANS, resolve_clip
    from ..models.vqgan import build_min_dalle_detokenizer, build_vqgan, vqgan_spec_from_model_config

    if vqgan_name not in VQGANS:
        raise unknown_choice("VQGAN", vqgan_name, VQGANS)
    entry = VQGANS[vqgan_name]
    if entry.format == "min-dalle":
        vqgan = build_min_dalle_detokenizer()
    elif entry.format == "dvae":
        from ..models.dvae import DVAE, Decoder, Encoder

        vqgan = DVAE(Decoder(), Encoder())  # the published files' architecture
    else:
        model = entry.model
        if "first_stage_config" in model.get("params", {}):  # Net2Net: the VQGAN is its first stage
            model = model["params"]["first_stage_config"]
        vqgan = build_vqgan(vqgan_spec_from_model_config(model, vqgan_name))
    vqgan = vqgan.to(device).eval().requires_grad_(False)
    spec = resolve_clip({"name": clip_name}) if clip_name in BUNDLED_CLIPS else {"name": clip_name}
    logger = logging.getLogger("vqclip.models.clip")
    previous, logger.level = logger.level, logging.ERROR  # "random weights" is the point here
    try:
        clip = ClipEnsemble([load_clip(spec, device)])
    finally:
        logger.setLevel(previous)
    return Models(vqgan, clip, device)


COMPILE_MODES = ("none", "default", "reduce-overhead")  # reduce-overhead: torch.compile with CUDA graphs


def bench(vqgan: str = "imagenet_f16_16384", clip: str = "ViT-B-32", size: int = 256, cutn: int = 32,
          steps: int = 3, device: str = "auto", precision: str = "auto", augmentations: str = "classic",
          warmup: int = 1, seed: int = 0, compile: str = "none", progress=None) -> dict:
    """Seconds per step (median after `warmup`), stage split, peak memory, FLOP rate; fast vs baseline.

    `compile` compiles the fast path's decoder and CLIP image encoder (forward and backward) with
    torch.compile: the warm-up step pays for the compilation (inductor keeps it in its on-disk cache)."""
    from ..machine.device import pick_device

    if size < 1 or cutn < 1 or steps < 1 or warmup < 0:
        raise UserError(f"bench needs size, cutn and steps ≥ 1 (got size {size}, cutn {cutn}, steps {steps})")
    if compile not in COMPILE_MODES:
        raise unknown_choice("compile mode", compile, COMPILE_MODES)
    torch.manual_seed(seed)
    where = pick_device(device)
    models = random_models(vqgan, clip, where)
    if size % models.vqgan.factor:
        raise UserError(f"--size {size} is not a multiple of {vqgan}'s factor {models.vqgan.factor}")
    dtype = resolve_precision(precision, where)
    augment = build_augmentations(augmentations).to(where)
    member = models.clip.members[0]
    target = EmbeddingPrompt(member.encode_text(["a painting of a red fox in the snow"])[0])
    grid = size // models.vqgan.factor
    z0 = models.vqgan.tokens_to_z(torch.randint(models.vqgan.n_embed, (1, grid, grid), device=where))

    paths = {
        "fast": _Path(models.in_precision(dtype), models.vqgan, dtype, batched=True, compile=compile),
        "baseline": _Path(models, models.vqgan, torch.float32, batched=False),
    }
    memory = _PeakMemory(where)
    times = {name: [] for name in paths}
    for index in range(warmup + steps):
        for name, path in paths.items():
            with memory.track(name):
                stages = path.step(z0, target, cutn, augment, where)
            if index >= warmup:
                times[name].append(stages)
            if progress:
                progress(f"{name} step {index + 1}/{warmup + steps}: {sum(stages.values()):.2f} s")

    flops = _count_flops(paths["fast"], z0, target, cutn, augment, where)
    fast, baseline = _summary(times["fast"]), _summary(times["baseline"])
    peak = measure_matmul_peak(where, dtype)
    return {
        "vqgan": vqgan, "clip": clip, "size": size, "cutn": cutn, "steps": steps, "compile": compile,
        "device": _device_name(where), "precision": str(dtype).removeprefix("torch."),
        "s_per_step": fast["total"], "baseline_s_per_step": baseline["total"],
        "speedup": baseline["total"] / fast["total"],
        "stages": {stage: fast[stage] for stage in STAGES},
        "baseline_stages": {stage: baseline[stage] for stage in STAGES},
        "peak_memory_mb": memory.peak_mb("fast"), "baseline_peak_memory_mb": memory.peak_mb("baseline"),
        "gflop_per_step": flops / 1e9, "achieved_tflops": flops / fast["total"] / 1e12,
        "matmul_peak_tflops": peak / 1e12, "fraction_of_peak": flops / fast["total"] / peak,
    }


class _Path:
    """One way of computing the step: the networks, the precision, and how cutouts are made."""

    def __init__(self, models, fp32_vqgan, dtype: torch.dtype, batched: bool, compile: str = "none"):
        self.models, self.fp32_vqgan, self.dtype, self.batched = models, fp32_vqgan, dtype, batched
        decode = lambda z: models.vqgan.decode(fp32_vqgan.quantize(z))  # noqa: E731
        encode = models.clip.members[0].encode_image
        if compile != "none":  # the two networks, forward and backward; cutouts and augmentations stay eager
            decode, encode = (torch.compile(function, mode=compile, dynamic=False) for function in (decode, encode))
        self.decode, self.encode = decode, encode

    def step(self, z0: torch.Tensor, target: EmbeddingPrompt, cutn: int, augment, device) -> dict[str, float]:
        clock = _StageClock(device)
        z = z0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=0.1)
        member = self.models.clip.members[0]
        with autocast(device, self.dtype):
            image = self.decode(z)
            clock.lap("decode")
            if self.batched:
                cutouts = make_cutouts(image, member.input_size, cutn, noise_fac=0)
            else:  # the classic scripts: one crop and one resize per cutout
                boxes = sample_cutout_boxes(*image.shape[-2:], member.input_size, cutn)
                cutouts = crop_and_resize(image.float(), boxes, member.input_size)
            clock.lap("cutouts")
            cutouts = augment(cutouts)
            cutouts = cutouts + 0.1 * torch.rand(cutouts.shape[0], 1, 1, 1, device=device) * torch.randn_like(cutouts)
            clock.lap("augment")
            loss = target(self.encode(cutouts))
            clock.lap("clip")
        loss.backward()
        clock.lap("backward")
        optimizer.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, self.fp32_vqgan.z_max), self.fp32_vqgan.z_min))
        clock.lap("optimizer")
        return clock.laps


class _StageClock:
    def __init__(self, device: torch.device):
        self.device, self.laps, self.last = device, {}, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.laps[stage] = now - self.last
        self.last = now


def _summary(steps: list[dict[str, float]]) -> dict[str, float]:
    summary = {stage: statistics.median(step[stage] for step in steps) for stage in STAGES}
    summary["total"] = statistics.median(sum(step.values()) for step in steps)
    return summary


def _count_flops(path: _Path, z0, target, cutn, augment, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        path.step(z0, target, cutn, augment, device)
    return float(counter.get_total_flops())


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None) -> float:
    """FLOP/s of a large square matrix product in `dtype` here and now (best of a few)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class _PeakMemory:
    """Peak memory per labelled phase: max allocated on CUDA, sampled resident set on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peaks = device, {}

    @contextlib.contextmanager
    def track(self, label: str):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            self._record(label, torch.cuda.max_memory_allocated(self.device))
            return
        _release_free_memory()
        peak, done = [_rss()], threading.Event()

        def sample():
            while not done.wait(0.002):
                peak[0] = max(peak[0], _rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield
        finally:
            done.set()
            sampler.join()
            self._record(label, max(peak[0], _rss()))

    def _record(self, label: str, value: int) -> None:
        self.peaks[label] = max(self.peaks.get(label, 0), value)

    def peak_mb(self, label: str) -> float:
        return self.peaks.get(label, 0) / 2**20


def _rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the high-water mark is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_PAGE = 4096


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS, so that one phase's leftovers do not count in the next."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..machine.step_time import cpu_name

    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def format_report(result: dict) -> str:
    """The figures as a short table for people."""
    lines = [f"{result['vqgan']} + {result['clip']}, {result['size']} px, cutn {result['cutn']}, "
             f"{result['device']}, {result['precision']}",
             f"{'stage':<10} {'fast s':>8} {'baseline s':>11}"]
    for stage in STAGES:
        lines.append(f"{stage:<10} {result['stages'][stage]:>8.3f} {result['baseline_stages'][stage]:>11.3f}")
    lines += [
        f"{'step':<10} {result['s_per_step']:>8.3f} {result['baseline_s_per_step']:>11.3f}   "
        f"speed-up {result['speedup']:.2f}×",
        f"peak memory: {result['peak_memory_mb']:.0f} MB (baseline {result['baseline_peak_memory_mb']:.0f} MB)",
        f"work: {result['gflop_per_step']:.0f} GFLOP per step, {result['achieved_tflops'] * 1e3:.0f} GFLOP/s "
        f"= {100 * result['fraction_of_peak']:.0f} % of the {result['matmul_peak_tflops'] * 1e3:.0f} GFLOP/s "
        f"matmul peak measured here",
    ]
    return "\n".join(lines)
