"""Video: animations, latent frame interpolation and restyled videos (`vqclip video ...`).

    from vqclip import video
    video.animate("a red circle", preset="shapes-zoom", output="zoom.mp4", video={"frames": 8})
    video.interpolate(["red.png", "blue.png"], preset="shapes-morph", output="morph.gif")
    video.restyle("zoom.mp4", "a blue square", preset="shapes-zoom", output="styled.mp4")
    video.resume("outputs/2026-11-22/0003-animate-a-red-circle")

Importing this package loads nothing heavy; the functions are imported on first use.
"""

from ..lazy import lazy_getattr

__getattr__ = lazy_getattr(__name__, {
    "animate": "commands", "interpolate": "commands", "restyle": "commands", "resume": "commands",
    "VideoResult": "commands",
    "read_frames": "frames", "write_video": "frames", "read_settings": "frames",
    "parse_schedule": "schedule", "lerp": "interpolation", "slerp": "interpolation"})
