"""The benchmarks behind `vqclip bench`, apart from the library they measure.

- `step`: seconds per optimisation step, stage by stage, against the classic scripts' fp32 step;
- `concurrent`: K whole runs started at once, against perfect sharing of the cores;
- `time_to_image`: seconds until a run reaches the classic loop's CLIP score;
- `window_memory`: the peak memory of a step on a canvas larger than memory (window=[w, h]).

They print figures (ratios against a baseline measured in the same run); nothing here is imported
by a run.
"""
