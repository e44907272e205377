"""Training, in one home: loop.py (the one loop, its state file and schedule), the recipes vqgan.py,
clip.py and prior.py over one data layer (vqclip/data/, or a world drawn on the fly), all.py (the
three and a preset), settings.py (a recipe's settings from the command line), common.py (what the
recipes share besides the loop) and distributed.py (torchrun)."""
