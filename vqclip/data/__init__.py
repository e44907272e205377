"""Captioned images, read once for every recipe: the layouts (pairs.py), the pixels (images.py),
and the scikit-learn digits written as such a folder (digits.py)."""
