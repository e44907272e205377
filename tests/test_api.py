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


def test_no_import_cycles_in_the_package():
    """Every import between vqclip's modules, function-level ones included, forms no cycle."""
    import ast
    from pathlib import Path

    root = Path(vqclip.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(("vqclip", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        modules[name] = path

    def imported(name: str, path: Path) -> set[str]:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
                submodules = {f"{target}.{alias.name}" for alias in node.names}
                found |= submodules if submodules <= set(modules) else submodules | {target}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        # a module's own packages are already being imported when it runs: not an edge of a cycle
        return {module for module in found if module in modules and not f"{name}.".startswith(f"{module}.")}

    graph = {name: imported(name, path) for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", f"import cycle: {' -> '.join([*trail, name, other])}"
            if other not in state:
                visit(other, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert len(graph) > 60


def test_run_leaves_the_callers_config_as_given(tiny_preset, tmp_path):
    from vqclip.config import build_config, to_dict
    from vqclip.generation import run

    config = build_config(str(tiny_preset), {"prompts": ["a red ^ a blue"], "steps": 2, "seed": None,
                                             "run_dir": str(tmp_path)})
    before = to_dict(config)
    result = run(config)
    assert to_dict(config) == before
    assert (before["seed"], before["threads"], before["story_every"]) == (None, None, None)
    assert result.config["seed"] is not None and result.config["threads"] >= 1 and result.config["story_every"] == 1


def test_no_module_imports_another_ones_private_names():
    """A name with a leading underscore is its module's own: another module that needs it needs it public."""
    import ast
    from pathlib import Path

    root = Path(vqclip.__file__).parent
    private = [f"{path.relative_to(root)}: {node.module} {alias.name}"
               for path in root.rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ImportFrom) and node.module != "__future__" and (node.level or
                                                                                        (node.module or "").startswith("vqclip"))
               for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert private == []
