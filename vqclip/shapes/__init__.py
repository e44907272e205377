"""The embedded shapes world: a data set that vqclip draws itself, and a judge that reads it back.

- `vqclip.shapes.world`: 64×64 images of one flat-coloured circle, square or triangle on a
  flat-coloured background, with captions ("an orange square on a blue background"), seeded
  endless streams, a fixed held-out split and batches for training.
- `vqclip.shapes.judge`: decides from the pixels alone which colour, shape and background an
  image shows, so that tests and `vqclip shapes eval` can score an image against its prompt.
- `vqclip.shapes.data`: the world as training data, drawn on the fly by the general recipes
  (`vqclip train all shapes --out DIR` made the shipped weights in `weights/`), or written as a
  captioned folder (`vqclip data shapes OUT`); `vqclip.shapes.evaluate`: `vqclip shapes eval`.

Nothing is imported or computed here: import the submodule you need.
"""
