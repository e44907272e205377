"""How much memory a step takes, and `size=auto`: the largest image (and cutn) that fits.

Users' most common failure is running out of memory at a larger size, so the memory of a step
is predicted from probe steps at three small sizes instead of tried. A step has two phases that
can hold the most memory at once:

- the decoder's forward and backward pass. Its tensors grow with the pixels (convolutions,
  norms, upsampling) and, in taming's attention blocks, with the square of the pixels: an
  AttnBlock materialises an (hw × hw) matrix (at 1360 px the shapes VQGAN's asks for 53 GB).
  With the graph fixed, every tensor's size is c0 + c1·pixels + c2·pixels², so the live bytes
  after each allocation, recorded at three sizes, determine that allocation's bytes at every
  size exactly; the phase's peak is the largest of them (the moment of the peak moves with the
  size: at small sizes it is a convolution's output, at large ones the attention's backward).
- the objective (cutouts, augmentations, CLIP forward and backward), which runs while the
  decoder's saved tensors wait for the backward pass. Its own peak is set by cutn and grows
  more slowly than the pixels (CLIP's inputs have a fixed size), so a line through two probes
  bounds it from above.

Bytes are counted, not sampled: a dispatch mode sees every tensor a step creates and frees
(deterministic, and the same on every device). `measure_peak_bytes` gives a step's whole peak:
`torch.cuda.max_memory_allocated` on CUDA, the same count elsewhere.
"""

from __future__ import annotations

import os
import resource
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import UserError

MAX_AUTO_SIDE = 4096  # size=auto never goes beyond this, whatever the memory
# The share of the budget a predicted peak may use. The count misses what never becomes a tensor:
# allocator rounding and fragmentation, buffers inside one kernel, cuDNN/cuBLAS workspaces on CUDA.
SAFETY = 0.85
PROBE_GRIDS = (4, 8, 12)  # latent positions a side of the probe steps (three sizes fix a quadratic)


class LiveTensorMemory(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside it while they live; keeps the peak, and
    in `trace` the live bytes after each allocation (the peak is always at an allocation)."""

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], int] = {}
        self.current = self.peak = 0
        self.trace: list[int] = []

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                storage = value.untyped_storage()
                key = (storage.data_ptr(), storage.nbytes())
                if storage.nbytes() and key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    self.trace.append(self.current)
                    weakref.finalize(storage, self._free, key)  # storages keep their Python object
        return out


def measure_peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """The most memory `step()` holds at once, beyond what existed before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with LiveTensorMemory() as counter:
        step()
    return counter.peak


# ------------------------------------------------------------------------------ free memory


def free_memory_bytes(device: torch.device) -> int:
    """Memory available to a new allocation now.

    CUDA: the device's free memory plus what PyTorch's cache holds unused. CPU: the least of the
    OS's MemAvailable, the container's memory limit (cgroup v2) and the process's address-space
    limit (`ulimit -v`), whichever are set: any of them ends the run with "can't allocate memory".
    """
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    limits = [_mem_available(), _cgroup_available(), _address_space_available()]
    return min(limit for limit in limits if limit is not None)


def _read_fields(path: str) -> dict[str, int]:
    """'name value [kB]' lines as {name: value}; {} when the file cannot be read."""
    try:
        with open(path, encoding="ascii") as lines:
            return {parts[0].rstrip(":"): int(parts[1]) for parts in map(str.split, lines)
                    if len(parts) >= 2 and parts[1].isdigit()}
    except OSError:
        return {}


def _mem_available() -> int:
    kib = _read_fields("/proc/meminfo").get("MemAvailable")
    if kib is not None:
        return kib * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_available() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as limit:
            maximum = limit.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as current:
            used = int(current.read())
    except (OSError, ValueError):
        return None
    if not maximum.isdigit():  # "max": no limit
        return None
    reclaimable = _read_fields("/sys/fs/cgroup/memory.stat").get("inactive_file", 0)  # page cache
    return max(0, int(maximum) - used + reclaimable)


def _address_space_available() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped_kib = _read_fields("/proc/self/status").get("VmSize")
    return None if mapped_kib is None else max(0, soft - mapped_kib * 1024)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is an allocation failure: CUDA's OutOfMemoryError, Python's MemoryError,
    or the RuntimeError of PyTorch's CPU and MPS allocators ("DefaultCPUAllocator: can't allocate
    memory", "MPS backend out of memory")."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message)


# ------------------------------------------------------------------------- the memory model


def _quadratic_weights(xs: tuple[float, float, float], x: float) -> torch.Tensor:
    """Lagrange weights: Σ weights[i]·f(xs[i]) = f(x) for every polynomial f of degree ≤ 2."""
    x0, x1, x2 = xs
    return torch.tensor([(x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2)),
                         (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2)),
                         (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1))], dtype=torch.float64)


@dataclass(frozen=True)
class DecoderMemory:
    """The decoder's forward and backward, probed at three sizes (`pixels`).

    Column j of `live` is the j-th allocation's live bytes at the three sizes: a quadratic in
    the pixels, so three values give it at any size (Lagrange weights), and the peak is the
    largest column.
    """

    pixels: tuple[int, int, int]
    live: torch.Tensor  # 3 × allocations: the live bytes after each allocation, per probe
    saved: torch.Tensor  # 3: the bytes held once the forward is done (saved for backward, and the image)

    def peak(self, pixels: float) -> float:
        return float((_quadratic_weights(self.pixels, pixels) @ self.live).max())

    def saved_at(self, pixels: float) -> float:
        return float(_quadratic_weights(self.pixels, pixels) @ self.saved)


def probe_decoder(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> tuple[list[int], int]:
    """The live bytes after each allocation of decode(z) and its backward, and the bytes held
    between the two (the objective's phase starts from there). `z` requires grad."""
    with LiveTensorMemory() as counter:
        image = decode(z)
        saved = counter.current
        image.backward(torch.ones_like(image))  # the objective hands back a gradient the image's size
    return counter.trace, saved


def fit_decoder_memory(probe: Callable[[int], tuple[list[int], int]], factor: int) -> DecoderMemory:
    """`probe(side)` (probe_decoder at a square side) at PROBE_GRIDS latent positions a side."""
    sides = [grid * factor for grid in PROBE_GRIDS]
    results = [probe(side) for side in sides]
    traces = [trace for trace, _ in results]
    if len({len(trace) for trace in traces}) != 1:
        # The decoder allocated differently at different sizes (a kernel chosen by size): the
        # allocations cannot be matched one to one, so fit the peaks alone. That misses a peak
        # that moves to another moment at larger sizes: the safety margin has to absorb it.
        traces = [[max(trace)] for trace in traces]
    return DecoderMemory(pixels=tuple(side * side for side in sides),
                         live=torch.tensor(traces, dtype=torch.float64),
                         saved=torch.tensor([saved for _, saved in results], dtype=torch.float64))


@dataclass(frozen=True)
class ObjectiveMemory:
    """The objective's forward and backward on an image, probed at two sizes: lines through
    (pixels, peak) and (pixels, kept), upper bounds for sizes beyond (module doc)."""

    pixels: tuple[int, int]
    peak: tuple[float, float]  # the most bytes held at once
    kept: tuple[float, float]  # bytes still held after it (cached text embeddings, the losses)

    def _line(self, values: tuple[float, float], pixels: float) -> float:
        (x0, x1), (y0, y1) = self.pixels, values
        return y1 + (y1 - y0) / (x1 - x0) * (pixels - x1)

    def peak_at(self, pixels: float) -> float:
        return self._line(self.peak, pixels)

    def kept_at(self, pixels: float) -> float:
        return self._line(self.kept, pixels)


def probe_objective(objective: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> tuple[int, int]:
    """(peak, kept): the bytes objective(image) and its backward to the image hold at most, and
    those still held after it, beside the image's gradient (the decoder probe counts that)."""
    image = image.detach().requires_grad_(True)
    with LiveTensorMemory() as counter:
        objective(image).backward()
        image.grad = None
    return counter.peak, counter.current


def fit_objective_memory(probe: Callable[[int], tuple[int, int]], factor: int) -> ObjectiveMemory:
    """`probe(side)` (probe_objective at a square side) at the two largest probe sizes."""
    sides = [grid * factor for grid in PROBE_GRIDS[1:]]
    results = [probe(side) for side in sides]
    return ObjectiveMemory(pixels=tuple(side * side for side in sides),
                           peak=tuple(float(peak) for peak, _ in results),
                           kept=tuple(float(kept) for _, kept in results))


@dataclass(frozen=True)
class MemoryModel:
    """A step's predicted peak bytes at any size: the larger of its two phases (module doc)."""

    decoder: DecoderMemory  # as the decoder runs below `checkpoint_from` pixels
    objective: ObjectiveMemory
    checkpointed: DecoderMemory | None = None  # with activation checkpointing, from `checkpoint_from`
    checkpoint_from: float = float("inf")

    def predict(self, width: int, height: int) -> float:
        pixels = width * height
        decoder = self.checkpointed if pixels >= self.checkpoint_from else self.decoder
        # The objective runs on the decoder's saved tensors; the decoder's backward runs beside
        # what the objective keeps.
        return max(decoder.saved_at(pixels) + self.objective.peak_at(pixels),
                   decoder.peak(pixels) + self.objective.kept_at(pixels))


def largest_side(model, factor: int, budget: float, max_side: int = MAX_AUTO_SIDE) -> int | None:
    """The largest square side (a multiple of factor) whose predicted peak fits SAFETY · budget.

    Every side is tried: the peak is not monotone in the size where decoder checkpointing
    switches on (at 512² px by default, a larger image can need less memory than a smaller one).
    """
    fitting = [side for side in range(factor, max_side + 1, factor) if model.predict(side, side) <= SAFETY * budget]
    return max(fitting, default=None)


def auto_size(model_for_cutn: Callable[[int], MemoryModel], factor: int, budget: float, cutn: int,
              min_side: int | None = None) -> tuple[int, int]:
    """(side, cutn) for `size=auto`: the largest square that fits `budget` bytes with the asked
    cutn; when not even `min_side` (default 4 latent positions) fits, cutn is halved until it does.

    `model_for_cutn(cutn)` is the step's MemoryModel with that cutn.
    """
    min_side = min_side or 4 * factor
    while True:
        side = largest_side(model_for_cutn(cutn), factor, budget)
        if side is not None and side >= min_side:
            return side, cutn
        if cutn == 1:
            raise UserError(f"size=auto: not even {min_side}×{min_side} with cutn 1 fits in "
                            f"{budget / 2**20:.0f} MB: free memory, or use a smaller model")
        cutn = max(1, cutn // 2)


def largest_size_like(model, size: tuple[int, int], factor: int, budget: float) -> tuple[int, int] | None:
    """The largest size below `size`, of its aspect ratio (sides multiples of factor), whose
    predicted peak fits SAFETY · budget: what to ask for after running out of memory at `size`."""
    long_side, short_side = max(size), min(size)
    best = None
    for long in range(factor, long_side, factor):  # all of them, as in largest_side
        short = max(factor, round(long * short_side / long_side / factor) * factor)
        candidate = (long, short) if size[0] >= size[1] else (short, long)
        if model.predict(*candidate) <= SAFETY * budget:
            best = candidate
    return best
