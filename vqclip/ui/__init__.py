"""The web UI (`vqclip ui`, the optional extra `ui`): a Gradio page with a live preview.

app.py builds the page and serves it; worker.py runs one job at a time per device from a queue;
gallery.py reads past runs from the outputs folder; forms.py turns the form into a config.
Importing this package imports nothing heavy: `vqclip.ui.serve` loads Gradio on first use.
"""

_LAZY = {"serve": "app", "build_app": "app", "Workers": "worker", "Job": "worker", "find_runs": "gallery",
         "config_from_form": "forms", "Form": "forms"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vqclip.ui' has no attribute {name!r}")
