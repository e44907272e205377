"""The shipped `digits` world: tiny models trained by `vqclip train all` on scikit-learn's digits.

- `vqclip.digits.data`: `vqclip data digits OUT`, scikit-learn's digits as a captioned folder.
- `weights/`: the VQGAN, CLIP and prior (`{name: digits}` in a config; presets/digits.yaml) with
  the metrics JSON files their recipes wrote.
- `vqclip.digits.judge`: a classifier of the real held-out digits that reads a generated image
  back to 8 × 8 in 17 grey levels, the way the data was made, and says which digit it shows.
- `vqclip.digits.evaluate`: `vqclip digits eval`, generation (and prior-sample) accuracy.

Nothing is imported or computed here: import the submodule you need.
"""
