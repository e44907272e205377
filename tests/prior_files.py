"""Test helpers for the prior: min-dalle's reference modules, imported without their side effect.

`import min_dalle.models` would run the package's `__init__`, which imports `min_dalle.min_dalle`,
which calls `torch.set_grad_enabled(False)` and `torch.set_num_threads(os.cpu_count())` for the
whole process: every later test that needs a gradient would fail. So the package is registered
as a bare namespace (its `__init__` never runs) and only `min_dalle.models` is imported from it;
`min_dalle.min_dalle` is never executed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch


def min_dalle_models():
    if "min_dalle.models" in sys.modules:
        return sys.modules["min_dalle.models"]
    spec = importlib.util.find_spec("min_dalle")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("min-dalle is not installed (it is in the test extra: pip install '.[test]')")
    if "min_dalle" not in sys.modules:
        package = types.ModuleType("min_dalle")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["min_dalle"] = package
    enabled = torch.is_grad_enabled()
    models = importlib.import_module("min_dalle.models")
    assert "min_dalle.min_dalle" not in sys.modules and torch.is_grad_enabled() == enabled
    return models
