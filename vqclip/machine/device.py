"""Which torch device a run computes on: `device=auto` is CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from ..errors import UserError


def pick_device(name: str) -> torch.device:
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise UserError(f"device {name} is not available here ({torch.cuda.device_count()} CUDA devices): "
                            "use device=auto or device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device mps is not available here: use device=auto or device=cpu")
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
