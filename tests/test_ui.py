"""The web UI's engine without a browser: the form, the per-device queue, stop/continue, the gallery.

Every run is on the shapes preset with a handful of steps; runs started from the page must give
the same pixels as the same settings through `vqclip.run` (the page is only another way in).
"""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from vqclip.cli import main
from vqclip.config import build_config
from vqclip.errors import UserError
from vqclip.ui import gallery
from vqclip.ui.forms import Form, config_from_form, extra_lines, form_defaults
from vqclip.ui.worker import CANCELLED, DONE, FAILED, STOPPED, Job, Workers

STEPS = 6


@pytest.fixture(scope="module")
def workers():
    pool = Workers()
    yield pool
    pool.close(timeout=60)


def shapes_config(tmp_path, prompt="a red triangle on a black background", **overrides):
    return build_config("shapes", {"prompts": [prompt], "seed": 2, "steps": STEPS, "quiet": True,
                                   "outputs_root": str(tmp_path / "outputs"), **overrides})


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def reference_pixels(config) -> np.ndarray:
    """The same settings through the Python API, into a folder of their own."""
    from vqclip.generation import run

    config = config.copy()
    config.outputs_root = config.outputs_root + "-reference"
    return pixels(run(config).final_path)


# -- the form ---------------------------------------------------------------------------------
def test_form_builds_the_config_the_command_line_would(tmp_path):
    form = Form(prompts="a red circle:2\n\n fog:-0.5 ", preset="shapes", steps=30.0, width=32, height=48,
                seed=7.0, cutn=8, image_prompts=["/x/ref.png"], image_prompt_weight=0.5,
                extra="# comment\nlr=0.2\ninit.weight=0.5")
    config = config_from_form(form, str(tmp_path))
    assert list(config.prompts) == ["a red circle:2", "fog:-0.5"]
    assert (config.steps, list(config.size), config.seed, config.cutn) == (30, [32, 48], 7, 8)
    assert (config.lr, config.init.weight, config.outputs_root) == (0.2, 0.5, str(tmp_path))
    assert list(config.image_prompts) == ["/x/ref.png:0.5"]
    assert config.vqgan.name == "shapes"
    assert form_defaults("shapes") == {"steps": 30, "width": 64, "height": 64, "seed": None, "cutn": 16}


@pytest.mark.parametrize("changes, message", [
    ({"prompts": "  \n"}, "type a prompt"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"seed": -1}, "seed must be at least 0"),
    ({"width": 64, "height": None}, "both width and height"),
    ({"extra": "lr 0.2"}, "is not key=value"),
    ({"extra": "cutnn=3"}, "unknown config key 'cutnn'"),
    ({"extra": "steps=abc"}, "steps"),
    ({"preset": "nope"}, "unknown preset 'nope'"),
])
def test_bad_form_input_is_one_line_that_names_the_field(tmp_path, changes, message):
    form = Form(**{"prompts": "a red circle", "preset": "shapes", **changes})
    with pytest.raises(UserError, match=message) as caught:
        config_from_form(form, str(tmp_path))
    assert "\n" not in str(caught.value)


def test_extra_lines_keep_yaml_values_whole():
    assert extra_lines("clip.models=[{name: shapes, weight: 1.0}]\n") == ["clip.models=[{name: shapes, weight: 1.0}]"]


# -- the worker -------------------------------------------------------------------------------
def test_a_job_previews_every_few_steps_and_ends_like_the_python_api(tmp_path, workers):
    config = shapes_config(tmp_path)
    job = Job(config, preview_every=2)
    seen = []
    original_update = job.update

    def record(**fields):  # runs on the worker thread, in step order
        if "preview" in fields:
            seen.append(fields["preview"].step)
        original_update(**fields)

    job.update = record
    workers.submit(job)
    assert job.wait(timeout=300), job.status
    assert job.status == DONE, job.error
    assert seen == [1, 2, 4, 6]
    assert job.preview.image.size == (64, 64) and job.steps_done == STEPS
    assert np.array_equal(pixels(job.final_path), reference_pixels(config))


class StopAfter(Job):
    """A job whose user presses Stop right after step `after` (on the worker thread: exact)."""

    def __init__(self, config, after: int, **kwargs):
        super().__init__(config, **kwargs)
        self.after = after

    def update(self, **fields):
        super().update(**fields)
        if "preview" in fields and fields["preview"].step >= self.after:
            self.request_stop()


def test_stop_keeps_the_state_and_continue_ends_as_if_never_stopped(tmp_path, workers):
    from vqclip.ui.app import continue_job

    config = shapes_config(tmp_path)
    job = workers.submit(StopAfter(config, after=3, preview_every=1))
    assert job.wait(timeout=300) and job.status == STOPPED, (job.status, job.error)
    assert job.steps_done == 3 and (job.run_dir / "state.pt").is_file()
    stopped = gallery.read_run(job.run_dir / "final.png")
    assert stopped.stopped and stopped.can_continue and "stopped at 3/6" in stopped.caption()

    more = workers.submit(continue_job(job.run_dir, None, preview_every=2))
    assert more.wait(timeout=300) and more.status == DONE, more.error
    assert more.run_dir == job.run_dir and more.steps_done == STEPS
    assert np.array_equal(pixels(more.final_path), reference_pixels(config))
    with pytest.raises(UserError, match="already has 6 steps"):
        continue_job(job.run_dir, 6, preview_every=2)


def test_one_run_at_a_time_per_device_in_order_and_a_queued_job_can_be_cancelled(tmp_path, workers):
    first = workers.submit(Job(shapes_config(tmp_path, seed=1)))
    second = workers.submit(Job(shapes_config(tmp_path, seed=2)))
    third = workers.submit(Job(shapes_config(tmp_path, seed=3)))
    assert workers.position(second) == 1 and workers.position(third) == 2  # jobs ahead of each
    third.request_stop()
    assert second.wait(timeout=300) and third.wait(timeout=300)
    assert first.status == second.status == DONE and third.status == CANCELLED
    assert first.final_path.stat().st_mtime_ns <= second.final_path.stat().st_mtime_ns
    assert len(list((tmp_path / "outputs").glob("*/*/final.png"))) == 2  # the cancelled one wrote nothing


def test_bad_input_found_by_the_run_fails_the_job_with_one_line(tmp_path, workers):
    job = workers.submit(Job(shapes_config(tmp_path, size=[66, 64])))
    assert job.wait(timeout=300) and job.status == FAILED
    assert "size" in job.error and "\n" not in job.error
    assert not list((tmp_path / "outputs").glob("*/*/final.png"))
    with pytest.raises(UserError, match="preview_every"):
        Job(shapes_config(tmp_path), preview_every=0)


# -- the gallery ------------------------------------------------------------------------------
def test_gallery_lists_runs_newest_first_and_runs_one_again_with_its_seed(tmp_path, workers):
    outputs = tmp_path / "outputs"
    (outputs / "2026-01-01" / "0001-junk").mkdir(parents=True)
    (outputs / "2026-01-01" / "0001-junk" / "final.png").write_bytes(b"not a png")  # skipped, not fatal
    jobs = [workers.submit(Job(shapes_config(tmp_path, prompt=p))) for p in ("a red circle", "a blue square")]
    assert all(job.wait(timeout=300) and job.status == DONE for job in jobs)
    runs = gallery.find_runs(outputs)
    assert [run.prompts for run in runs] == [["a blue square"], ["a red circle"]]
    assert runs[0].caption() == f"a blue square · seed 2 · {STEPS} steps" and not runs[0].stopped
    assert "seed: 2" in gallery.settings_text(runs[0])

    again = workers.submit(Job(gallery.rerun_config(runs[1], outputs)))
    assert again.wait(timeout=300) and again.status == DONE
    assert again.run_dir != runs[1].run_dir
    assert np.array_equal(pixels(again.final_path), pixels(runs[1].image))
    assert gallery.find_runs(tmp_path / "missing") == []


# -- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["ui", "--port", "abc"], ["ui", "--port", "70000"], ["ui", "--preview-every", "0"],
                                  ["ui", "--preset", "nope"]])
def test_ui_command_refuses_bad_arguments_in_one_line(argv, capsys, tmp_path):
    pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")
    assert main([*argv, "--outputs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqclip: error:") and err.count("\n") == 1


def test_only_loopback_addresses_count_as_private():
    from vqclip.ui.app import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
