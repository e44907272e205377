"""Batches on Ray: a local Ray instance (2 CPUs) gives the same images as a run in this process."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

import vqclip
from vqclip.batch import ray_tasks
from vqclip.cli import main
from vqclip.outputs import read_jsonl

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'vqclip[ray]')")

JOBS = {"defaults": {"preset": "shapes", "steps": 2, "cutn": 4},
        "jobs": [{"prompt": "a red circle on a blue background", "seed": 11},
                 {"prompt": "a green square on a white background", "seed": 12},
                 {"prompt": "a blue triangle", "preset": "nosuch"}]}


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vqclip[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_ray
def test_ray_and_local_give_the_same_images(local_ray, tmp_path):
    local = list(vqclip.batch.run(JOBS, tmp_path / "local", threads=1))
    on_ray = sorted(vqclip.batch.run(JOBS, tmp_path / "ray", ray=True, threads=1), key=lambda r: r.job.index)
    assert local_ray.is_initialized()  # the batch joined the running Ray and left it running
    assert [r.status for r in on_ray] == ["ok", "ok", "failed"], [r.error for r in on_ray]
    assert on_ray[2].error.startswith("unknown preset 'nosuch'")
    for here, there in zip(local[:2], on_ray[:2]):
        assert there.files[0] == tmp_path / "ray" / there.job.name / "final.png"
        assert np.array_equal(pixels(here.files[0]), pixels(there.files[0]))
        assert here.score == pytest.approx(there.score, abs=1e-6)
    records = read_jsonl(tmp_path / "ray" / "summary.jsonl")
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    assert (tmp_path / "ray" / "contact_sheet.png").is_file()
    assert not (tmp_path / "ray" / ray_tasks.TOKEN_NAME).exists()


@needs_ray
def test_files_come_back_from_a_worker_that_cannot_see_the_folder(local_ray, tmp_path):
    """A worker on another machine runs the job in its own temporary folder and sends the files."""
    job = vqclip.batch.jobs_from([{"prompt": "a red circle", "preset": "shapes", "steps": 1, "cutn": 2,
                                   "seed": 3}])[0]
    # no token file in `out`: the worker acts as if the batch folder were elsewhere
    record = ray_tasks.ray_job(job.kind, job.settings, job.name, str(tmp_path / "elsewhere"), "token", 1)
    assert record["status"] == "ok" and set(record["shipped"]) >= {"final.png", "config.yaml", "state.pt"}
    target = tmp_path / "out" / job.name
    ray_tasks.receive_files(target, record.pop("shipped"))
    assert (target / "final.png").is_file() and pixels(target / "final.png").shape == (64, 64, 3)
    with pytest.raises(vqclip.errors.UserError, match="outside its job folder"):
        ray_tasks.receive_files(target, {"../escape.txt": b"x"})


@needs_ray
def test_a_sweep_on_ray_halves_as_a_local_one(local_ray, tmp_path, monkeypatch):
    """Each round's seeds as Ray tasks at once: the same scores, the same survivors and the same
    pixels as the sweep in this process (both at one thread); and from the command line."""
    from vqclip.batch.seed_sweep import SETTINGS, sweep, sweep_seed_task
    from vqclip.config import build_config
    from vqclip.errors import UserError

    config = build_config("shapes", {"prompts": ["a red circle on a blue background"], "steps": 8, "cutn": 4,
                                     "threads": 1, "quiet": True})
    here = sweep(config, tmp_path / "here", seeds=4, keep=1)
    there = sweep(config, tmp_path / "there", seeds=4, keep=1, ray=True)
    assert [(run.seed, run.score, run.steps) for run in there.runs] == [(run.seed, run.score, run.steps)
                                                                        for run in here.runs]
    assert np.array_equal(pixels(there.best.run_dir / "final.png"), pixels(here.best.run_dir / "final.png"))
    rounds = sorted((r["round"], r["seed"], r["score"]) for r in read_jsonl(tmp_path / "there" / "rounds.jsonl"))
    assert rounds == sorted((r["round"], r["seed"], r["score"]) for r in read_jsonl(tmp_path / "here" / "rounds.jsonl"))
    with pytest.raises(UserError, match="needs Ray workers that see"):  # a worker elsewhere cannot go on with a run
        sweep_seed_task("{}", str(tmp_path / "nowhere"), 0, 0, 1, 1)
    assert not (tmp_path / "nowhere" / SETTINGS).exists()
    code = main(["sweep", "a red circle on a blue background", "-p", "shapes", "--steps", "8", "--seeds", "4",
                 "--keep", "1", "--threads", "1", "cutn=4", "--quiet", "--out", str(tmp_path / "cli"), "--ray"])
    assert code == 0 and (tmp_path / "cli" / "contact_sheet.png").is_file()


def test_unreachable_ray_address_is_one_line_exit_2(tmp_path, capsys):
    batch = tmp_path / "b.yaml"
    batch.write_text("jobs:\n  - {prompt: a red circle, preset: shapes}\n")
    code = main(["batch", str(batch), "--out", str(tmp_path / "out"), "--ray", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert ("cannot reach the Ray cluster at 127.0.0.1:1" in err) if HAVE_RAY else ("pip install" in err)
    assert not (tmp_path / "out").exists()  # nothing was written
    assert main(["batch", str(batch), "--out", str(tmp_path / "out"), "--ray=nonsense"]) == 2
    assert ("give HOST:PORT" in capsys.readouterr().err) if HAVE_RAY else True
