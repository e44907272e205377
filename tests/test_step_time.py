"""size=auto on a CPU: the step time it predicts, the size it picks from it, and that the pick is kept."""

from __future__ import annotations

import json
import time

import pytest

from vqclip.generation import generate
from vqclip.machine import step_time
from vqclip.machine.step_time import StepTime, fit_step_time, largest_side_in_time


def test_the_fitted_line_goes_through_both_probes():
    model = fit_step_time(lambda side: 0.5 + 1e-4 * side * side, factor=4)
    assert model.fixed == pytest.approx(0.5) and model.per_pixel == pytest.approx(1e-4)
    assert fit_step_time(lambda side: 2.0, factor=4) == StepTime(2.0, 0.0)  # never a negative slope or intercept


def test_a_chosen_side_beyond_the_probes_is_timed_and_the_line_drawn_through_it():
    timed = []

    def time_at(side):  # slower per pixel beyond 64 px, as a step is once it outgrows the caches
        timed.append(side)
        return 0.1 + 1e-5 * side * side * (1 if side <= 64 else 2)

    model = fit_step_time(time_at, factor=4, choose=lambda model: 200)
    assert timed == [32, 64, 200] and model.predict(200, 200) == pytest.approx(0.1 + 2e-5 * 200 * 200)
    assert model.predict(64, 64) == pytest.approx(0.1 + 1e-5 * 64 * 64)
    assert fit_step_time(time_at, factor=4, choose=lambda model: 48) == fit_step_time(time_at, factor=4)


def test_the_largest_side_whose_run_fits_the_budget():
    model = StepTime(fixed=0.1, per_pixel=1e-5)  # 64 px: 0.14 s, 128 px: 0.26 s, 256 px: 0.76 s
    assert largest_side_in_time(model, 16, steps=100, budget_s=26.5, max_side=1024, min_side=64) == 128
    assert largest_side_in_time(model, 16, steps=100, budget_s=1e6, max_side=256, min_side=64) == 256  # the cap
    assert largest_side_in_time(model, 16, steps=100, budget_s=1.0, max_side=256, min_side=64) == 64  # none fits


def test_a_measured_line_is_kept_per_key_and_a_later_run_uses_it(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return StepTime(0.2, 3e-6)

    assert step_time.cached_step_time("a", measure, tmp_path) == (StepTime(0.2, 3e-6), True)
    assert step_time.cached_step_time("a", lambda: StepTime(9.0, 9.0), tmp_path) == (StepTime(0.2, 3e-6), False)
    assert step_time.cached_step_time("b", measure, tmp_path)[1] and len(calls) == 2
    (tmp_path / step_time.CACHE_NAME).write_text("{not json")  # a damaged file is measured again
    assert step_time.cached_step_time("a", measure, tmp_path) == (StepTime(0.2, 3e-6), True)


def seconds_per_step(side: int, run_dir) -> float:
    """The fastest step of a short shapes run at side × side px (what a user waits for per step)."""
    stamps = []
    generate("a red circle on a blue background", preset="shapes", size=[side, side], steps=5, seed=1, quiet=True,
             init={"mode": "random"},
             save_every=0, checkpoint_every=0, run_dir=str(run_dir), callback=lambda step: stamps.append(time.perf_counter()))
    return min(later - earlier for earlier, later in zip(stamps, stamps[1:]))


def test_size_auto_predicts_the_shapes_step_within_30_percent_and_keeps_its_choice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    result = generate("a red circle on a blue background", preset="shapes", size="auto", steps=20, seed=1,
                      time_budget_s=8, quiet=False, run_dir=str(tmp_path / "auto"), init={"mode": "random"})
    said = capsys.readouterr().out
    (stored,) = json.loads((tmp_path / "cache" / step_time.CACHE_NAME).read_text()).values()
    model = StepTime(**stored)
    side = result.config["size"][0]
    assert result.config["size"] == [side, side] and 20 * model.predict(side, side) <= 8
    assert side == 256 or 20 * model.predict(side + 4, side + 4) > 8  # the largest that fits, up to 4 × 64 px
    assert f"size=auto: {side}×{side} with cutn " in said and "step times measured now" in said
    for probe in (96, 160, 256):
        measured = seconds_per_step(probe, tmp_path / f"at-{probe}")
        assert model.predict(probe, probe) == pytest.approx(measured, rel=0.3), probe

    # The next run chooses from the stored line without timing anything: the load of the moment
    # cannot change its size, so the same command gives the same pixels.
    monkeypatch.setattr(step_time, "fastest", lambda step, repeats=0: pytest.fail("timed again"))
    again = generate("a red circle on a blue background", preset="shapes", size="auto", steps=20, seed=1,
                     time_budget_s=8, quiet=False, run_dir=str(tmp_path / "again"), init={"mode": "random"})
    assert again.config["size"] == result.config["size"]
    assert "as measured before on this machine" in capsys.readouterr().out
