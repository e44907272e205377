"""vqclip: text-to-image generation by VQGAN+CLIP optimisation.

Importing this package loads nothing heavy and runs nothing: `vqclip.generate` and friends are
imported on first use.
"""

__version__ = "0.1.0"

_LAZY = {"generate": "generate", "run": "generate", "resume": "generate", "load_models": "generate",
         "GenerationResult": "run_files",
         "build_config": "config"}
_SUBPACKAGES = ("batch", "video")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBPACKAGES:  # `import vqclip; vqclip.batch.run(...)` without importing vqclip.batch first
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vqclip' has no attribute {name!r}")
