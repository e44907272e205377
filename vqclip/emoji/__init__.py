"""The emoji world: the named emoji of a colour emoji font as captioned pictures.

- `vqclip.emoji.data`: `vqclip data emoji OUT` writes them, on the shapes world's eight colours,
  with a fixed held-out set of (emoji, background) pairs never seen in training.
- `vqclip.emoji.judge`: which emoji an image shows, and on which background, by comparison with
  the font's own drawings (no model of the project's).
- `vqclip.emoji.evaluate`: `vqclip emoji eval`, a preset graded on the held-out pairs.

Nothing is imported or computed here: import the submodule you need.
"""
