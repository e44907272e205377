"""The public Python API keeps its shape: lazy names stay what they are after first use."""

import importlib
import pkgutil
import subprocess
import sys

import vqclip


def lazy_packages():
    yield vqclip
    for info in pkgutil.walk_packages(vqclip.__path__, "vqclip."):
        if info.ispkg and not info.name.startswith(("vqclip.presets", "vqclip.augmentations")):
            yield importlib.import_module(info.name)


def test_no_lazy_name_is_shadowed_by_a_submodule():
    checked = 0
    for package in lazy_packages():
        names = getattr(getattr(package, "__getattr__", None), "names", {})
        submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        for name, module in names.items():
            assert name not in submodules or module == name, f"{package.__name__}.{name} is also a submodule"
            checked += 1
    assert checked >= 20


def test_generate_stays_a_function_after_first_use():
    # A fresh interpreter: the first access imports vqclip.generation, which must not rebind the name.
    code = ("import vqclip; a = vqclip.generate; import vqclip.generation; b = vqclip.generate; "
            "print(type(a).__name__, type(b).__name__, a is b, type(vqclip.run).__name__, "
            "type(vqclip.batch).__name__, type(vqclip.video.animate).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["function", "function", "True", "function", "module", "function"]


def test_import_is_light():
    code = "import sys, vqclip, vqclip.video, vqclip.ui; print(sorted({'torch', 'open_clip', 'kornia'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
