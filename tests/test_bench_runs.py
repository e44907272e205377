"""The whole-run benchmarks: K runs at once (vqclip bench --concurrent) and time to a good image."""

from __future__ import annotations

import json

import pytest

from vqclip.bench.concurrent import concurrent
from vqclip.bench.time_to_image import first_reaching, time_to_image
from vqclip.cli import main


def test_concurrent_runs_k_processes_and_compares_with_perfect_sharing(monkeypatch):
    monkeypatch.setattr("vqclip.bench.concurrent.usable_cores", lambda: 2)
    result = concurrent(2, "shapes", steps=1, threads=1)
    assert result["k"] == 2 and result["cores"] == 2 and result["threads"] == 1
    assert min(result["single_s"], result["alone_s"], result["together_s"]) > 0
    assert result["ideal_s"] == pytest.approx(max(result["single_s"], 2 * result["single_s"] / 2))
    assert result["ratio"] == pytest.approx(result["together_s"] / result["ideal_s"])


def test_concurrent_refuses_bad_settings(capsys):
    assert main(["bench", "--concurrent", "0"]) == 2
    assert "--concurrent and --steps must be at least 1" in capsys.readouterr().err
    assert main(["bench", "--concurrent", "2", "--workload", "painting"]) == 2
    assert "unknown bench workload 'painting'" in capsys.readouterr().err


def test_first_reaching():
    trace = [(0.5, 0.2), (1.0, 0.6), (1.5, 0.5), (2.0, 0.7)]
    assert first_reaching(trace, 0.6) == 1.0 and first_reaching(trace, 0.65) == 2.0
    assert first_reaching(trace, 0.9) is None


def test_time_to_image_reports_each_start(capsys):
    assert main(["bench", "--time-to-image", "1", "--steps", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row, = report["rows"]
    assert row["prompt"] == "a red circle on an orange background" and report["steps"] == 3
    assert 0 < row["random_s"] <= row["classic_s"]  # the classic loop reaches its own final score
    assert 1 <= row["preset_steps"] <= 3 and 0 < row["target_score"] < 1
    assert (row["preset_s"] is None) == (row["preset_best"] < row["target_score"])
    assert isinstance(row["classic_drawn_right"], bool) and isinstance(row["preset_drawn_right"], bool)
    assert report["preset_reached"] == (row["preset_s"] is not None)


def test_time_to_image_needs_prompts_and_steps():
    from vqclip.errors import UserError

    with pytest.raises(UserError, match="at least one prompt and one step"):
        time_to_image([], steps=3)


def test_bench_names_the_compile_modes(capsys):
    assert main(["bench", "--vqgan", "shapes", "--clip", "shapes", "--size", "64", "--compile", "fast"]) == 2
    assert "valid choices: default, none, reduce-overhead" in capsys.readouterr().err
