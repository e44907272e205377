"""Steering a run while it goes (vqclip/controls/steering.py): a change applies from the next step,
is logged and recorded in the config, and --from and --resume make it again, pixel for pixel."""

from __future__ import annotations

import numpy
import pytest
from PIL import Image

from vqclip.cli import main
from vqclip.config import build_config, read_yaml
from vqclip.errors import UserError
from vqclip.generation import generate, resume, run
from vqclip.outputs import read_jsonl, read_metadata
from vqclip.ui.app import Page, steer_job
from vqclip.ui.worker import DONE, Job, Workers

PROMPT = "a red circle on a blue background"
CHANGE = {"prompts": "a blue square on a white background:1 | a red circle:0.5", "lr": 0.05}
SETTINGS = dict(preset="shapes", steps=7, seed=4, quiet=True)


def pixels(folder) -> numpy.ndarray:
    return numpy.asarray(Image.open(folder / "final.png"))


def steer_at(step: int, change: dict, stop_at: int | None = None):
    def callback(info):
        if info.step == step:
            return change
        return False if info.step == stop_at else None
    return callback


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("steered") / "run"
    generate(PROMPT, run_dir=str(folder), callback=steer_at(3, CHANGE), **SETTINGS)
    return folder


def test_a_change_applies_from_the_next_step_and_is_logged_and_recorded(steered, tmp_path):
    log = read_jsonl(steered / "log.jsonl")
    assert [record["lr"] for record in log] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    assert log[2]["steered"] == CHANGE and all("steered" not in record for record in log[:2] + log[3:])
    assert read_yaml(steered / "config.yaml")["steering"] == {"3": CHANGE}  # written as text, read back as steps
    assert read_metadata(steered / "final.png")["config"]["steering"] == {"3": CHANGE}
    plain = tmp_path / "plain"
    generate(PROMPT, run_dir=str(plain), **SETTINGS)
    assert (pixels(plain) != pixels(steered)).mean() > 0.1  # the change changed the picture


def test_from_and_resume_and_a_preset_steering_make_the_same_pixels(steered, tmp_path):
    assert main(["--from", str(steered / "final.png"), "--run-dir", str(tmp_path / "again"), "quiet=true"]) == 0
    assert numpy.array_equal(pixels(tmp_path / "again"), pixels(steered))

    stopped = tmp_path / "stopped"  # steered at 3, stopped at 5 (state.pt there), resumed to 7
    generate(PROMPT, run_dir=str(stopped), callback=steer_at(3, CHANGE, stop_at=5), checkpoint_every=1, **SETTINGS)
    resume(stopped)
    assert numpy.array_equal(pixels(stopped), pixels(steered))

    ahead = tmp_path / "ahead"  # the same change written into the config beforehand
    generate(PROMPT, run_dir=str(ahead), steering={3: CHANGE}, **SETTINGS)
    assert numpy.array_equal(pixels(ahead), pixels(steered))


def test_a_list_of_prompts_steers_as_prompts_side_by_side():
    from vqclip.controls.steering import check_change

    assert check_change({"prompts": ["a blue square:2", "fog:-1"]}) == {"prompts": "a blue square:2 | fog:-1"}
    with pytest.raises(UserError, match="prompts are a text or a list of texts, not 3"):
        check_change({"prompts": 3})


@pytest.mark.parametrize("change,message", [
    ({"colour": "red"}, "sets prompts, lr or both"),
    ({"lr": -1}, "lr must be a positive finite number, not -1"),
    ({"prompts": None, "lr": None}, "is empty: give new prompts, an lr or both"),
    ({"prompts": "cat:nan"}, "the weight must be a finite number"),
])
def test_bad_changes_are_one_line(change, message, tmp_path):
    with pytest.raises(UserError, match=message):
        build_config("shapes", {"steering": {2: change}})
    job = Job(build_config("shapes", {"outputs_root": str(tmp_path)}))
    with pytest.raises(UserError, match=message):
        job.steer(change)


def test_the_page_steers_its_running_job_and_the_worker_applies_it(tmp_path):
    """A change sent before the first step ends is applied after it: recorded at step 1, and the
    run's pixels are those of the same change written into the config."""
    config = build_config("shapes", {"prompts": [PROMPT], "steps": 4, "seed": 4, "quiet": True,
                                     "outputs_root": str(tmp_path / "outputs")})
    workers = Workers()
    page = Page(workers, str(tmp_path / "outputs"), str(tmp_path / "uploads"), 1)
    try:
        assert steer_job(page, None, "a blue square", None) == "Nothing is running."
        job = Job(config, preview_every=1)
        workers._jobs[job.id] = job  # known to the page, not yet running: the change waits for step 1
        assert steer_job(page, job.id, "a blue square\n\nwhite:0.5", "0.05").startswith("Error: ")  # lr as text
        assert steer_job(page, job.id, "a blue square\n\nwhite:0.5", 0.05).startswith("The change applies")
        workers.submit(job)
        assert job.wait(timeout=300) and job.status == DONE, job.error
    finally:
        workers.close(timeout=60)
    recorded = read_yaml(job.run_dir / "config.yaml")["steering"]
    assert recorded == {"1": {"prompts": "a blue square | white:0.5", "lr": 0.05}}
    reference = run(build_config("shapes", {**config, "steering": recorded, "outputs_root": str(tmp_path / "ref")}))
    assert numpy.array_equal(pixels(job.run_dir), numpy.asarray(Image.open(reference.final_path)))


def test_a_prompt_schedule_is_repeated_from_its_png(tmp_path):
    """Step-keyed groups come back from a PNG's JSON metadata with text keys ("2"), which the schema
    took for a wrong type: --from of a scheduled run failed."""
    generate(PROMPT, run_dir=str(tmp_path / "first"), schedule={0: PROMPT, 2: "a blue square"}, **SETTINGS)
    assert main(["--from", str(tmp_path / "first" / "final.png"), "--run-dir", str(tmp_path / "again"),
                 "quiet=true"]) == 0
    assert numpy.array_equal(pixels(tmp_path / "again"), pixels(tmp_path / "first"))
