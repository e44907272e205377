"""The general training recipes over one data layer (vqclip/data/): vqgan.py, clip.py, prior.py, all.py
(the three and a preset), and jobs.py (settings from the command line)."""
