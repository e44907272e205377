"""Batch files: grid expansion, merging, and one-line errors that name the job and the key (no models run)."""

from __future__ import annotations

import pytest

from vqclip.batch import ModelCache, parse_batch, read_batch_file
from vqclip.batch.kinds import KINDS
from vqclip.batch.spec import Job, jobs_from
from vqclip.batch.summary import config_hash, is_finished
from vqclip.cli import main
from vqclip.errors import UserError

EXAMPLE = """\
defaults: {preset: shapes, steps: 30}
grid:                      # every combination becomes a job
  prompt: ["a red circle", "a blue square"]
  seed: [1, 2]
  cutn: [8, 16]
jobs:                      # and these, one by one
  - {prompt: "a green triangle", seed: 3}
"""


def test_grid_and_list_expand_in_order(tmp_path):
    path = tmp_path / "batch.yaml"
    path.write_text(EXAMPLE)
    jobs = read_batch_file(path)
    assert len(jobs) == 9 and [job.index for job in jobs] == list(range(9))
    # the first grid key varies slowest, the last fastest
    assert [(j.settings["prompt"], j.settings["seed"], j.settings["cutn"]) for j in jobs[:3]] == [
        ("a red circle", 1, 8), ("a red circle", 1, 16), ("a red circle", 2, 8)]
    assert jobs[7].settings == {"preset": "shapes", "steps": 30, "prompt": "a blue square", "seed": 2, "cutn": 16}
    assert jobs[8].settings == {"preset": "shapes", "steps": 30, "prompt": "a green triangle", "seed": 3}
    assert jobs[8].origin == "jobs[0]" and jobs[8].kind == "generate"
    assert jobs[0].name == "000-a-red-circle" and jobs[8].name == "008-a-green-triangle"


def test_dotted_keys_and_nested_mappings_merge():
    jobs = parse_batch({"defaults": {"init": {"weight": 0.5, "anchor": "zero"}},
                        "grid": {"init.weight": [0.0, 1.0]}})
    assert [job.settings["init"] for job in jobs] == [{"weight": 0.0, "anchor": "zero"},
                                                      {"weight": 1.0, "anchor": "zero"}]


@pytest.mark.parametrize("batch, expected", [
    ({"jobs": [{"prompt": "a", "stpes": 3}]}, ["job 0 (jobs[0])", "stpes"]),
    ({"defaults": {"steps": 2}, "grid": {"seed": [1, 2]}, "jobs": [{"prompt": "b", "steps": "abc"}]},
     ["job 2 (jobs[0])", "steps"]),
    ({"grid": {"seed": 3}}, ["grid.seed", "list"]),
    ({"grid": {"seed": []}}, ["grid.seed", "non-empty"]),
    ({"jobs": ["a red circle"]}, ["jobs[0]", "mapping"]),
    ({"jobs": {"prompt": "a"}}, ["jobs must be a list"]),
    ({"job": [{"prompt": "a"}]}, ["unknown top-level key 'job'", "did you mean: jobs"]),
    ({"defaults": {"steps": 3}}, ["holds no jobs"]),
    ({"jobs": [{"prompt": "a", "kind": "painting"}]}, ["job 0", "unknown kind 'painting'", "generate"]),
    ({"jobs": [{"prompt": "a", "run_dir": "x"}]}, ["job 0", "run_dir cannot be set in a batch"]),
    ({"jobs": [{"prompt": "a", "prompts": ["b"]}]}, ["job 0", "prompt or prompts"]),
    ({"jobs": [{"prompt": "a", "preset": 3}]}, ["job 0", "preset must be"]),
    ({"defaults": {"init": 3}, "jobs": [{"init.weight": 1}]}, ["job 0", "init is set both"]),
    ({"jobs": [{"prompt": "a", "cutn": 0}]}, ["job 0", "cutn must be at least 1"]),
    ([1, 2], ["must be a mapping"]),
    ({"jobs": [{"kind": "video", "command": "dance"}]}, ["job 0", "unknown video command 'dance'", "animate"]),
    ({"jobs": [{"kind": "video", "command": "interpolate"}]}, ["job 0", "interpolate needs keys"]),
    ({"jobs": [{"kind": "video", "command": "restyle", "prompt": "a"}]}, ["job 0", "restyle needs input"]),
    ({"jobs": [{"kind": "video", "prompt": "a", "format": "avi"}]}, ["job 0", "unknown video format 'avi'"]),
    ({"jobs": [{"kind": "video", "prompt": "a", "frames": 0}]}, ["job 0", "frames must be at least 1"]),
    ({"jobs": [{"kind": "prior-sample"}]}, ["job 0", "prior-sample needs one text prompt"]),
    ({"jobs": [{"kind": "prior-sample", "prompt": "a", "num": 0}]}, ["job 0", "at least 1"]),
    ({"jobs": [{"kind": "prior-sample", "prompt": "a", "top_k": "many"}]}, ["job 0", "top_k must be a whole"]),
])
def test_malformed_batches_name_the_job_and_key(batch, expected):
    with pytest.raises(UserError) as caught:
        parse_batch(batch, source="b.yaml")
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def test_cli_malformed_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("defaults: {preset: shapes}\njobs:\n  - {prompt: a, seed: 1}\n  - {prompt: b, sed: 2}\n")
    code = main(["batch", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "job 1 (jobs[1])" in err and "'sed'" in err and "seed" in err
    assert not (tmp_path / "out").exists()  # nothing is written before the file is checked


@pytest.mark.parametrize("text, expected", [("a: [1, 2", "not valid YAML"),
                                            ("!!python/object:os.system {}", "not valid YAML")])
def test_cli_unreadable_files(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["batch", str(path), "--out", str(tmp_path / "out")]) == 2
    assert expected in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "missing.yaml" in err


def test_cli_bad_options(tmp_path, capsys):
    path = tmp_path / "b.yaml"
    path.write_text(EXAMPLE)
    assert main(["batch", str(path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "workers must be at least 1" in capsys.readouterr().err
    assert main(["batch", str(path)]) == 2
    assert "--out" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["batch", str(path), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_config_hash_follows_the_resolved_settings(tmp_path):
    base = {"prompt": "a red circle", "preset": "shapes", "seed": 1}
    first, same, other = (jobs_from([settings])[0] for settings in (base, dict(base), {**base, "seed": 2}))
    assert config_hash(first) == config_hash(same) != config_hash(other)
    # the default value written out is the same job as the default left out (the preset's steps is 30)
    assert config_hash(jobs_from([{**base, "steps": 30}])[0]) == config_hash(first)
    # a preset given as a file: editing the file changes the hash
    preset = tmp_path / "mine.yaml"
    preset.write_text("steps: 5\n")
    job = jobs_from([{"prompt": "x", "preset": str(preset)}])[0]
    before = config_hash(job)
    preset.write_text("steps: 6\n")
    assert config_hash(job) != before
    # an unknown preset cannot be resolved, but still hashes (the job fails when it runs)
    assert len(config_hash(jobs_from([{"prompt": "x", "preset": "nosuch"}])[0])) == 16


def test_finished_needs_ok_same_hash_and_the_file(tmp_path):
    job = Job(0, {"prompt": "a"}, "generate")
    (tmp_path / "000-a").mkdir()
    (tmp_path / "000-a" / "final.png").write_bytes(b"png")
    record = {"status": "ok", "config_hash": "h", "outputs": ["000-a/final.png"]}
    assert is_finished(record, job, "h", tmp_path)
    assert not is_finished(record, job, "other", tmp_path)
    assert not is_finished({**record, "status": "failed"}, job, "h", tmp_path)
    assert not is_finished({**record, "outputs": ["000-a/gone.png"]}, job, "h", tmp_path)
    assert not is_finished(None, job, "h", tmp_path)


def test_jobs_from_accepts_the_python_forms(tmp_path):
    assert [job.settings for job in jobs_from([{"prompt": "a"}, {"prompt": "b"}])] == [{"prompt": "a"},
                                                                                         {"prompt": "b"}]
    assert len(jobs_from({"grid": {"seed": [1, 2, 3]}})) == 3
    jobs = [Job(0, {"prompt": "a"})]
    assert jobs_from(jobs) == jobs
    with pytest.raises(UserError, match="indexes"):
        jobs_from([Job(1, {"prompt": "a"})])
    assert "generate" in KINDS


def test_model_cache_loads_once_per_key_and_keeps_the_latest():
    cache, loaded = ModelCache(capacity=2), []

    def loader(name):
        return lambda: loaded.append(name) or name.upper()

    assert [cache.get(k, loader(k)) for k in ("a", "a", "b", "a", "c", "a", "b")] == list("AABACAB")
    assert loaded == ["a", "b", "c", "b"] and cache.loads == 4  # "b" was dropped when "c" came


def test_workers_own_one_gpu_each_when_there_are_several(monkeypatch):
    import torch

    from vqclip.batch.runner import worker_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices(3) == ["cuda:0", "cuda:1", "cuda:0"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_devices(2) == [None, None]  # one GPU: the jobs' own device setting decides
