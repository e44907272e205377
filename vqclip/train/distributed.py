"""Several processes training one model (`torchrun --nproc-per-node N -m vqclip train ...`).

Every process (rank) runs the whole recipe. Each draws the whole global batch from the same seeded
streams as one process would (indices, crops, augmentations) and keeps its 1/N share (`shard`), so
the N shares together are exactly the one process's batch; DistributedDataParallel averages the
gradients, and the result is one process's with the same `batch_size`, up to the order in which
floating-point sums are taken. What couples the samples of a batch is computed over the global
batch, not the share: CLIP's contrastive logits (`gather`), the discriminator's batch norm
(`GlobalBatchNorm`), the VQGAN's adaptive weight and codebook use (`mean`, `total`). Rank 0 alone
writes checkpoints, sample grids and metrics; the others wait (`barrier`) where they read what it
wrote. One process (no torchrun) takes none of these paths: its results are unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU it drives

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1


def ranks_from_env(environ=None) -> Ranks:
    """The rank torchrun gave this process (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    environ = os.environ if environ is None else environ
    try:
        ranks = Ranks(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)),
                      int(environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers: start several processes "
                        "with torchrun, which sets them") from None
    if not 0 <= ranks.rank < ranks.world:
        raise UserError(f"RANK={ranks.rank} must be at least 0 and below WORLD_SIZE={ranks.world}")
    return ranks


def rank_device(device: str | torch.device, ranks: Ranks) -> torch.device:
    """The device a rank computes on: a plain "cuda" means this machine's GPU number LOCAL_RANK."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and ranks.several:
        return torch.device("cuda", ranks.local_rank)
    return device


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def start(device: str | torch.device, batch_size: int) -> tuple[Ranks, torch.device]:
    """This process's ranks and device; under torchrun, joins the process group (once per process),
    after checking that the ranks can take equal shares of a batch of `batch_size`."""
    import torch.distributed as dist

    ranks = ranks_from_env()
    check_batch(batch_size, ranks)
    device = rank_device(device, ranks)
    if not ranks.several:
        return ranks, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend(device), rank=ranks.rank, world_size=ranks.world)
    return ranks, device


def stop() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session():
    """Around a command: the process group, joined by the recipes, is left at the end."""
    try:
        yield
    finally:
        stop()


def check_batch(batch_size: int, ranks: Ranks) -> None:
    if ranks.several and batch_size % ranks.world:
        raise UserError(f"batch_size={batch_size} must be a multiple of the {ranks.world} processes (each takes "
                        f"an equal share of every batch): set batch_size={batch_size - batch_size % ranks.world or ranks.world}")


def shard(batch, ranks: Ranks):
    """This rank's share of a global batch (a tensor or a list): rows rank·B/N to (rank+1)·B/N."""
    if not ranks.several:
        return batch
    size = len(batch) // ranks.world
    return batch[ranks.rank * size:(ranks.rank + 1) * size]


def seed_rank(seed: int, ranks: Ranks) -> None:
    """After the model is built (the same on every rank): torch's own stream seeded per rank, for
    anything random inside the networks. Rank 0 keeps one process's stream."""
    if ranks.rank > 0:
        torch.manual_seed(seed + 1_000_003 * ranks.rank)


class _Apply(nn.Module):
    """`function(module, *args)` as a forward pass, so DistributedDataParallel sees it."""

    def __init__(self, module: nn.Module, function):
        super().__init__()
        self.module, self.function = module, function

    def forward(self, *args):
        return self.function(self.module, *args)


def parallel(module: nn.Module, function, ranks: Ranks, device: torch.device):
    """`function(module, *args)` for a training step; with several ranks, through DistributedDataParallel
    (the gradients of `module` averaged over the ranks in backward)."""
    if not ranks.several:
        return functools.partial(function, module)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_Apply(module, function), device_ids=[device.index] if device.type == "cuda"
                                   else None)


def mean(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The average of `value` over the ranks (no gradient)."""
    if not ranks.several:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return value / ranks.world


def total(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sum of `value` over the ranks (no gradient)."""
    if not ranks.several:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return value


class _Sum(torch.autograd.Function):
    """The sum over ranks; backward: each rank's input gets the sum over ranks of the gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Sum.apply(grad)


class _Gather(torch.autograd.Function):
    """All ranks' shares in rank order; backward: each share gets the sum over ranks of its gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.world = rank, world
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        size = len(grad) // ctx.world
        return grad[ctx.rank * size:(ctx.rank + 1) * size], None, None


def gather(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The global batch of a per-sample tensor, with gradients flowing back to this rank's share.

    Every rank then computes the same whole loss; each share's gradient sums the ranks' copies
    (N times the loss's), and DistributedDataParallel's average divides the N back out."""
    if not ranks.several:
        return tensor
    return _Gather.apply(tensor, ranks.rank, ranks.world)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's (every rank's share), as for one
    process; torch's SyncBatchNorm does this on GPUs only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        values = x.float()
        average = _Sum.apply(values.sum((0, 2, 3))) / count
        centred = values - average[:, None, None]
        variance = _Sum.apply(centred.square().sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(average, momentum)
                self.running_var.lerp_(variance * count / max(count - 1, 1), momentum)
        out = centred * torch.rsqrt(variance + self.eps)[:, None, None]
        if self.affine:
            out = out * self.weight[:, None, None] + self.bias[:, None, None]
        return out.to(x.dtype)


def global_batch_norms(module: nn.Module, ranks: Ranks) -> nn.Module:
    """`module` with its BatchNorm2d layers computing global-batch statistics (several ranks only; the
    new layers are made on the CPU: move the module to its device after)."""
    if not ranks.several:
        return module
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            twin = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            twin.load_state_dict(child.state_dict())
            setattr(module, name, twin)
        else:
            global_batch_norms(child, ranks)
    return module


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (e.g. for rank 0 to finish writing what the others read next)."""
    if ranks.several:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(ranks: Ranks):
    """Rank 0 runs the block first (e.g. writes a file); the others run it after, finding its result."""
    if not ranks.main:
        barrier(ranks)
    yield
    if ranks.main:
        barrier(ranks)
