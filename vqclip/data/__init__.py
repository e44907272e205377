"""Captioned images, read once for every recipe: the layouts (pairs.py) and the pixels (images.py).
The worlds' own data makers live beside their worlds (vqclip.digits.data, vqclip.shapes.world)."""
