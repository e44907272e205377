"""The page's Video tab engine: animate / interpolate jobs through the per-device queue."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image, ImageSequence

from vqclip.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vqclip.video") is None,
                                reason="vqclip.video is not part of this checkout")

TINY = {"first_frame_steps": 4, "steps_per_frame": 2}


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


@pytest.fixture(scope="module")
def workers():
    from vqclip.ui.worker import Workers

    pool = Workers()
    yield pool
    pool.close(timeout=60)


def test_animate_job_writes_the_video_and_a_gif_like_the_python_api(tmp_path, workers):
    from vqclip import video
    from vqclip.ui.video_tab import video_config
    from vqclip.ui.worker import DONE, Job

    config = video_config("animate", "shapes-zoom", ["a red circle on a blue background"], 2, 1,
                          str(tmp_path / "outputs"))
    config.video.first_frame_steps, config.video.steps_per_frame = TINY["first_frame_steps"], TINY["steps_per_frame"]
    job = workers.submit(Job(config, kind="animate"))
    assert job.wait(timeout=300) and job.status == DONE, job.error
    assert job.final_path == job.run_dir / "video.gif" and (job.run_dir / "video.mp4").is_file()
    assert job.steps_done == 2

    direct = video.animate("a red circle on a blue background", preset="shapes-zoom", output=str(tmp_path / "d.gif"),
                           seed=1, quiet=True, outputs_root=str(tmp_path / "direct"), video={"frames": 2, **TINY})
    shown, expected = gif_frames(job.final_path), gif_frames(direct.output)
    assert len(shown) == 2 and all(np.array_equal(a, b) for a, b in zip(shown, expected))


def test_interpolate_job_between_two_prompts(tmp_path, workers):
    from vqclip.ui.video_tab import video_config
    from vqclip.ui.worker import DONE, Job

    keys = ["a red circle", "a blue square"]
    config = video_config("interpolate", "shapes-morph", keys, 1, 3, str(tmp_path / "outputs"))
    config.steps = 4
    job = workers.submit(Job(config, kind="interpolate", inputs=keys))
    assert job.wait(timeout=300) and job.status == DONE, job.error
    assert len(gif_frames(job.final_path)) == job.steps_done == 3  # key, one between, key


@pytest.mark.parametrize("kind, lines, count, message", [
    ("animate", [], None, "type a prompt"),
    ("interpolate", ["only one"], None, "at least two keys"),
    ("animate", ["a red circle"], 0, "frames must be at least 1"),
    ("interpolate", ["a", "b"], 1.5, "frames between keys must be a whole number"),
])
def test_bad_video_input_is_one_line(tmp_path, kind, lines, count, message):
    from vqclip.ui.video_tab import video_config

    with pytest.raises(UserError, match=message):
        video_config(kind, "shapes-zoom", lines, count, None, str(tmp_path))
