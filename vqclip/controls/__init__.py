"""The artist's controls over a picture's form: seamless tiles (tiling.py), limited palettes and
indexed PNGs (palette.py), mirror symmetry (symmetry.py), upscaling (upscale.py), canvases larger
than memory optimised a window at a time (canvas.py), and pixels held toward a picture (hold.py).
Each is a config key group that the objective, the decoder and the written files read; none runs
at import."""
