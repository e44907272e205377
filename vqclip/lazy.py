"""Lazy public names for a package: `import vqclip` stays light, `vqclip.generate(...)` imports on use.

A public name must never equal a submodule's name: importing the submodule binds the module
over the package attribute, so the name would change type after its first use
(`tests/test_api.py` checks every package).
"""

from __future__ import annotations

import importlib


def lazy_getattr(package: str, names: dict[str, str]):
    """A module `__getattr__` that imports `package.<names[name]>` on first use and returns `name` from it.

    Nothing is bound in the package: each lookup reads the submodule's attribute as it is now,
    so the package never holds a stale copy (of a function a test or a plugin replaced, say).
    """

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{names[name]}")
        return module if names[name] == name else getattr(module, name)

    __getattr__.names = dict(names)  # for the test that checks every package's public names
    return __getattr__
