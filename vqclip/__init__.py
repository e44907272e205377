"""vqclip: text-to-image generation by VQGAN+CLIP optimisation.

Importing this package loads nothing heavy and runs nothing: the models and the engine are
imported when first used.
"""

__version__ = "0.1.0"
