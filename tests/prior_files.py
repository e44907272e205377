"""Test helpers for the prior: min-dalle's reference modules, imported without their side effect.

`import min_dalle.models` runs the package's `__init__`, which imports `min_dalle.min_dalle`, which
calls `torch.set_grad_enabled(False)` and `torch.set_num_threads(os.cpu_count())` for the whole
process: every later test that needs a gradient would fail, and on a shared CPU the extra threads
make everything slower. The import here puts both back as they were.
"""

from __future__ import annotations

import pytest
import torch


def min_dalle_models():
    enabled, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:
        return pytest.importorskip("min_dalle.models")
    finally:
        torch.set_grad_enabled(enabled)
        torch.set_num_threads(threads)
