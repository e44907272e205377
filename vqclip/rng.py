"""Every random stream a run or a training loop draws from: seeding them, saving them, restoring them.

A resumed run must draw exactly what an uninterrupted one would, so its state file holds Python's,
NumPy's and torch's global streams and the run's own generator, as tensors (state files are read
with weights_only=True).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (Kornia draws from torch's global RNG) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator, python=random) -> dict:
    """Every random stream a loop draws from, as tensors (state files are read with weights_only).

    `python` is the Python stream it draws from: the global one (the `random` module, as a
    generation does) or its own `random.Random` (as the training recipes do)."""
    version, python_state, gauss = python.getstate()
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(),
            "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)), "numpy_pos": int(numpy_state[2]),
            "python": torch.tensor(python_state, dtype=torch.int64), "python_version": version,
            "python_gauss": gauss}


def restore_rng(saved: dict, generator: torch.Generator, python=random) -> None:
    """Put every random stream back where rng_state() found it."""
    torch.set_rng_state(saved["torch"])
    generator.set_state(saved["generator"])
    np.random.set_state(("MT19937", saved["numpy"].numpy().astype(np.uint32), saved["numpy_pos"]))
    python.setstate((saved["python_version"], tuple(saved["python"].tolist()), saved["python_gauss"]))
