"""The thread policy: how many CPU threads a run gives torch, and that the choice reaches torch."""

from __future__ import annotations

import pytest
import torch

from vqclip import threads
from vqclip.generation import generate
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


@pytest.mark.parametrize("asked, env, current, cores, busy, expected", [
    (3, {"OMP_NUM_THREADS": "2"}, 5, 8, 0, 3),  # threads= wins over everything
    (None, {"OMP_NUM_THREADS": "2"}, 8, 8, 0, 2),  # then the environment
    (None, {}, 5, 8, 0, 5),  # then a count the caller set with torch.set_num_threads (not torch's default 8)
    (None, {}, 8, 8, 0, 8),  # an idle machine: every usable core
    (None, {}, 2, 2, 1, 1),  # one other busy thread on 2 cores: the free one
    (None, {}, 2, 2, 6, 1),  # never below 1
    (None, {"OMP_NUM_THREADS": "junk"}, 4, 4, 1, 3),  # an unreadable value is ignored
])
def test_plan_threads_rules(asked, env, current, cores, busy, expected):
    plan = threads.plan_threads(asked, cores=cores, busy=busy, environ=env, current=current, default=cores)
    assert plan.threads == expected


def test_threads_key_reaches_torch_and_is_recorded(tiny_preset, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    seen = []
    result = generate("a red circle", preset=str(tiny_preset), steps=2, threads=1, run_dir=str(tmp_path / "one"),
                      callback=lambda step: seen.append(torch.get_num_threads()))
    assert seen == [1, 1] and torch.get_num_threads() == before  # the caller's count comes back
    assert result.config["threads"] == 1 and read_metadata(result.final_path)["config"]["threads"] == 1


def test_auto_threads_take_the_free_cores(tiny_preset, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    default = torch.get_num_threads()
    monkeypatch.setattr(threads, "affinity_cores", lambda: default)  # torch holds its own default count
    seen = []
    result = generate("a red circle", preset=str(tiny_preset), steps=1, run_dir=str(tmp_path / "idle"),
                      callback=lambda step: seen.append(torch.get_num_threads()))
    assert seen == [2] and result.config["threads"] == 2
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 3)
    seen.clear()
    with caplog.at_level("WARNING", logger="vqclip.threads"):
        result = generate("a red circle", preset=str(tiny_preset), steps=1, run_dir=str(tmp_path / "busy"),
                          quiet=False, callback=lambda step: seen.append(torch.get_num_threads()))
    assert seen == [1] and result.config["threads"] == 1
    assert "3 threads of other work are busy on the 2 core(s)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="vqclip.threads"):  # quiet: the same plan, nothing said
        result = generate("a red circle", preset=str(tiny_preset), steps=1, run_dir=str(tmp_path / "quiet"),
                          quiet=True)
    assert result.config["threads"] == 1 and "busy" not in caplog.text


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
    assert not plans[0].reason.startswith("threads=") and {plan.threads for plan in plans} == {1}
    assert len(plans) > 1 and all(plan.reason == "threads=1" for plan in plans[1:])  # frames keep the video's count
    assert "threads: 1" in (result.run_dir / "config.yaml").read_text()
