"""vqclip: text-to-image generation by VQGAN+CLIP optimisation.

Importing this package loads nothing heavy and runs nothing: `vqclip.generate` and friends are
imported on first use.
"""

from .lazy import lazy_getattr

__version__ = "0.1.0"

__getattr__ = lazy_getattr(__name__, {
    "generate": "generation", "run": "generation", "resume": "generation", "load_models": "loading",
    "GenerationResult": "run_files", "build_config": "config", "upscale": "controls.upscale",
    "batch": "batch", "video": "video",  # `import vqclip; vqclip.batch.run(...)` without importing vqclip.batch
})
