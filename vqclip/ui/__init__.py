"""The web UI (`vqclip ui`, the optional extra `ui`): a Gradio page with a live preview.

app.py builds the page and serves it; worker.py runs one job at a time per device from a queue;
gallery.py reads past runs from the outputs folder; forms.py turns the form into a config.
Importing this package imports nothing heavy: `vqclip.ui.serve` loads Gradio on first use.
"""

from ..lazy import lazy_getattr

__getattr__ = lazy_getattr(__name__, {
    "serve": "app", "build_app": "app", "Workers": "worker", "Job": "worker", "find_runs": "gallery",
    "config_from_form": "forms", "Form": "forms"})
