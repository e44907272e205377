"""What the machine offers a run, and how a run uses it: which device (device.py), how many CPU
threads and how they wait (threads.py), which dtype each part computes in (precision.py), and how
large an image fits in memory (memory.py) and in the time budget (step_time.py) for size=auto.

Nothing is imported or computed here: import the submodule you need.
"""
