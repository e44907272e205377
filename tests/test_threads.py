"""The thread policy: how many CPU threads a run gives torch, and that the choice reaches torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from vqclip.generation import generate
from vqclip.machine import threads
from vqclip.outputs import read_metadata


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path)) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(str(tmp_path)) is None


@pytest.mark.parametrize("affinity, quota, cores", [(8, None, 8), (8, 1.5, 2), (2, 4.0, 2), (4, 0.5, 1), (1, None, 1)])
def test_usable_cores_is_affinity_capped_by_quota(affinity, quota, cores):
    assert threads.usable_cores(affinity=affinity, quota=quota) == cores


def test_busy_elsewhere_reads_runnable_threads(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.50 0.90 0.40 3/120 5555\n")
    assert threads.busy_elsewhere(samples=2, interval=0, loadavg=str(loadavg)) == 2  # 3 runnable, one is us
    loadavg.write_text("0.00 0.00 0.00 1/120 5555\n")
    assert threads.busy_elsewhere(samples=1, loadavg=str(loadavg)) == 0
    assert threads.busy_elsewhere(loadavg=str(tmp_path / "missing")) == 0


@pytest.mark.parametrize("asked, env, current, cores, expected", [
    (3, {"OMP_NUM_THREADS": "2"}, 5, 8, 3),  # threads= wins over everything
    (None, {"OMP_NUM_THREADS": "2"}, 8, 8, 2),  # then the environment
    (None, {}, 5, 8, 5),  # then a count the caller set with torch.set_num_threads (not torch's default 8)
    (None, {}, 8, 8, 8),  # else every usable core
    (None, {}, 8, 2, 2),  # a cgroup quota of 2 cores below torch's 8
    (None, {"OMP_NUM_THREADS": "junk"}, 4, 4, 4),  # an unreadable value is ignored
])
def test_plan_threads_rules(asked, env, current, cores, expected):
    plan = threads.plan_threads(asked, cores=cores, environ=env, current=current, default=8)
    assert plan.threads == expected and plan.default == (expected == cores)


@pytest.mark.parametrize("environ, busy, expected", [
    ({}, 0, {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000"}),  # an idle machine: a short spin
    ({}, 2, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}),  # other work: idle threads sleep at once
    ({"OMP_WAIT_POLICY": "ACTIVE"}, 2, {}),  # the user's choice stays
    ({"GOMP_SPINCOUNT": "0"}, 0, {}),
    ({"KMP_BLOCKTIME": "0"}, 0, {}),
])
def test_wait_policy(environ, busy, expected):
    assert threads.wait_policy(environ, busy=busy) == expected


def test_the_cli_sets_the_wait_policy_before_torch_starts(tmp_path):
    import subprocess
    import sys

    code = ("import os, sys; from vqclip.machine import threads; threads.busy_elsewhere = lambda: 1; "
            "print(threads.share_cores(), os.environ.get('OMP_WAIT_POLICY')); import torch; "
            "print(threads.share_cores(), threads.wait_policy(busy=0))")
    environ = {key: value for key, value in os.environ.items() if key not in threads.WAIT_VARIABLES}
    lines = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    # busy at the start: passive; once torch is imported nothing changes, and the variables it set
    # are vqclip's own, not a user's choice (a batch's workers may still be given another policy)
    assert lines == ["{'OMP_WAIT_POLICY': 'PASSIVE', 'GOMP_SPINCOUNT': None} PASSIVE",
                     "{} {'OMP_WAIT_POLICY': None, 'GOMP_SPINCOUNT': '1000'}"]


def test_threads_key_reaches_torch_and_is_recorded(tiny_preset, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    seen = []
    result = generate("a red circle", preset=str(tiny_preset), steps=2, threads=1, run_dir=str(tmp_path / "one"),
                      callback=lambda step: seen.append(torch.get_num_threads()))
    assert seen == [1, 1] and torch.get_num_threads() == before  # the caller's count comes back
    assert result.config["threads"] == 1 and read_metadata(result.final_path)["config"]["threads"] == 1


def test_the_default_count_ignores_the_load_and_another_count_is_said(tiny_preset, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    default = torch.get_num_threads()
    monkeypatch.setattr(threads, "affinity_cores", lambda: default)  # torch holds its own default count
    seen = []
    for busy in (0, 3):  # the planner never looks at the load: nothing to mock would change it
        monkeypatch.setattr(threads, "busy_elsewhere", lambda busy=busy: busy)
        with caplog.at_level("WARNING", logger="vqclip.machine.threads"):
            result = generate("a red circle", preset=str(tiny_preset), steps=1, quiet=False,
                              run_dir=str(tmp_path / f"busy{busy}"), callback=lambda step: seen.append(torch.get_num_threads()))
        assert result.config["threads"] == 2
    assert seen == [2, 2] and "threads" not in caplog.text
    with caplog.at_level("WARNING", logger="vqclip.machine.threads"):
        result = generate("a red circle", preset=str(tiny_preset), steps=1, quiet=False, threads=1,
                          run_dir=str(tmp_path / "one"))
    assert result.config["threads"] == 1
    assert "threads=1: 1 thread(s) where this machine's default is 2, so the pixels differ" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="vqclip.machine.threads"):  # quiet: nothing said
        generate("a red circle", preset=str(tiny_preset), steps=1, quiet=True, threads=1, run_dir=str(tmp_path / "q"))
    assert "threads" not in caplog.text


def test_an_enclosing_plan_holds_for_nested_runs(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threads.run_threads(1) as outer:
        with threads.run_threads() as inner:
            assert inner is outer and torch.get_num_threads() == 1
        with threads.run_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1


def test_threads_key_is_checked():
    from vqclip.config import build_config
    from vqclip.errors import UserError

    with pytest.raises(UserError, match="threads must be between 1 and"):
        build_config(None, {"threads": 0})


def test_a_video_plans_its_threads_once_and_records_them(tmp_path, monkeypatch):
    from vqclip import video

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    plans = []
    real = threads.plan_threads
    monkeypatch.setattr(threads, "plan_threads",
                        lambda *args, **kwargs: plans.append(real(*args, **kwargs)) or plans[-1])
    result = video.animate("a red circle", preset="shapes-zoom", run_dir=str(tmp_path / "zoom"),
                           output=str(tmp_path / "zoom.gif"), init={"mode": "random", "weight": 0.0},
                           video={"frames": 3, "first_frame_steps": 1, "steps_per_frame": 1})
    assert [plan.reason for plan in plans] == ["1 usable core"]  # planned once: the frames keep the video's plan
    assert "threads: 1" in (result.run_dir / "config.yaml").read_text()


def captioned_squares(folder, colours):
    """A training folder: one 32 px square a colour, captioned."""
    folder.mkdir()
    for index, colour in enumerate(colours):
        Image.new("RGB", (32, 32), colour).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"a {colour} square")
    return folder


# One cheap run of every command that computes (the UI's jobs are generation and video runs).
COMMAND_RUNS = {
    "generate": lambda d: ["a red circle", "--preset", "shapes", "--steps", "1", "--run-dir", d / "run", "--quiet"],
    "prior sample": lambda d: ["prior", "sample", "a red circle", "-o", d / "p.png", "-p", "shapes", "--prior",
                               "shapes", "--num", "1", "--quiet"],
    "train vqgan": lambda d: ["train", "vqgan", d / "images", "--out", d / "vqgan", "steps=1", "batch_size=2",
                              "n_embed=16", "embed_dim=4", "z_channels=4", "ch=32", "disc_layers=1", "disc_ch=8",
                              "held_out=2", "bf16=false", "--quiet"],
    "train clip": lambda d: ["train", "clip", d / "images", "--out", d / "clip", "steps=1", "batch_size=2",
                             "width=8", "embed_dim=8", "text_width=16", "text_layers=1", "context_length=8",
                             "held_out=2", "bf16=false", "--quiet"],
    "train prior": lambda d: ["train", "prior", d / "images", "--vqgan", "shapes", "--size", "32", "--out", d / "prior",
                              "steps=1", "batch_size=2", "width=16", "heads=1", "glu=16", "eval_items=1", "bf16=false",
                              "--quiet"],
    "emoji eval": lambda d: ["emoji", "eval", "--preset", "shapes", "--pairs", "1", "--out", d / "eval-emoji",
                             "steps=1", "cutn=2", "init.prior_candidates=1"],
    "shapes eval": lambda d: ["shapes", "eval", "--prompts", d / "prompts.txt", "--out", d / "eval-shapes", "steps=1",
                              "cutn=2"],
    "video": lambda d: ["video", "animate", "a red circle", "-p", "shapes-zoom", "--frames", "2", "-o",
                        d / "zoom.gif", "--run-dir", d / "video", "video.first_frame_steps=1",
                        "video.steps_per_frame=1", "--quiet"],
    "batch": lambda d: ["batch", d / "batch.yaml", "--out", d / "batch"],
    "bench": lambda d: ["bench", "--vqgan", "shapes", "--clip", "shapes", "--size", "64", "--cutn", "2",
                        "--steps", "1"],
    "models check": lambda d: ["models", "check", "-p", "shapes"],
    "digits eval": lambda d: ["digits", "eval", "--digits", "3", "--out", d / "eval", "steps=1"],
    "sweep": lambda d: ["sweep", "a red circle", "-p", "shapes", "--seeds", "2", "--keep", "1", "--steps", "3",
                        "--out", d / "sweep", "--quiet", "cutn=2"],
    "upscale": lambda d: ["upscale", d / "images" / "0.png", "--scale", "2", "-p", "shapes", "--steps", "1",
                          "--run-dir", d / "upscale", "--quiet", "cutn=2"],
}


def test_every_command_either_computes_or_never_imports_torch():
    from vqclip.cli import COMMANDS, COMPUTING

    assert set(COMMANDS) - COMPUTING == {"data", "info", "presets"}
    assert {run.split()[0] for run in COMMAND_RUNS} | {"ui"} == COMPUTING  # the UI's jobs: generate and video


@pytest.mark.parametrize("name", sorted(COMMAND_RUNS))
def test_every_computing_command_plans_the_default_count_whatever_the_load(name, tmp_path, monkeypatch):
    from vqclip.cli import main
    from vqclip.emoji.data import FONT_PATHS

    if name == "emoji eval" and not Path(FONT_PATHS[0]).is_file():
        pytest.skip("needs Debian's fonts-noto-color-emoji (.ci/run installs it)")
    captioned_squares(tmp_path / "images", ("red", "green", "blue", "white", "yellow", "cyan"))
    (tmp_path / "prompts.txt").write_text("a red circle on a blue background\n")
    (tmp_path / "batch.yaml").write_text("defaults: {preset: shapes, steps: 1, cutn: 2}\njobs:\n  - {prompt: a dot}\n")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda *args, **kwargs: 5)  # a machine full of other work
    monkeypatch.setattr(threads, "usable_cores", lambda: 3)
    monkeypatch.setattr(threads, "affinity_cores", torch.get_num_threads)
    counts = []
    monkeypatch.setattr(threads, "set_torch_threads", lambda count: counts.append(count) or torch.set_num_threads(count))
    before = torch.get_num_threads()
    assert main([str(arg) for arg in COMMAND_RUNS[name](tmp_path)]) == 0
    assert counts and set(counts) == {3}  # planned, on the machine's default count, never fewer for the load
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("busy, cores, threads_flag, warned", [
    (1, 2, None, True),  # a busy neighbour on 2 cores: the 2 threads wait for it at every step
    (0, 2, None, False),
    (1, 4, "2", False),  # a free core for each thread
    (1, 2, "1", False),  # one thread never waits for another
])
def test_training_beside_busy_work_says_what_it_costs(busy, cores, threads_flag, warned, tmp_path, monkeypatch,
                                                      capsys):
    from vqclip.cli import main

    images = captioned_squares(tmp_path / "images", ("red", "green", "blue", "white"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda *args, **kwargs: busy)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "affinity_cores", torch.get_num_threads)
    flag = ["--threads", threads_flag] if threads_flag else []
    assert main(["train", "clip", str(images), "--out", str(tmp_path / "clip"), "steps=1", "batch_size=2", "width=8",
                 "embed_dim=8", "text_width=16", "text_layers=1", "context_length=8", "held_out=2", "bf16=false",
                 *flag]) == 0
    said = capsys.readouterr().err
    assert ("training waits for it at every step" in said) == warned
