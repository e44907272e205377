"""Seed sweeps by successive halving (vqclip/batch/seed_sweep.py): the rounds, the halving order,
survivors equal to plain runs, a stopped sweep going on, the command, the batch kind, the errors."""

from __future__ import annotations

import pytest
import torch

import vqclip.batch
from vqclip.batch import seed_sweep
from vqclip.batch.seed_sweep import Round, halving_rounds, sweep
from vqclip.cli import main
from vqclip.config import build_config
from vqclip.errors import UserError
from vqclip.generation import generate
from vqclip.outputs import load_image, read_jsonl


def test_the_rounds_split_the_budget_of_the_kept_runs():
    rounds = halving_rounds(32, 4, 30)
    assert rounds == [Round(32, 1), Round(16, 2), Round(8, 5), Round(4, 17)]
    assert halving_rounds(8, 2, 30) == [Round(8, 2), Round(4, 7), Round(2, 19)]
    assert halving_rounds(5, 2, 10) == [Round(5, 1), Round(3, 3), Round(2, 7)]  # halves round up
    for seeds, keep, steps in ((32, 4, 30), (8, 2, 30), (5, 2, 10), (100, 3, 200)):
        rounds = halving_rounds(seeds, keep, steps)
        spent = sum(size * (reached - before) for (size, reached), before in
                    zip([(r.size, r.steps) for r in rounds], [0] + [r.steps for r in rounds]))
        assert spent <= keep * steps < spent + keep  # the budget of `keep` plain runs, all but a remainder


@pytest.mark.parametrize("seeds,keep,steps,expected", [
    (4, 4, 30, "--keep 4 must be at least 1 and below --seeds 4"),
    (4, 0, 30, "--keep 0 must be at least 1"),
    (64, 1, 3, "--steps 3 is too few for 64 seeds kept down to 1"),
])
def test_impossible_sweeps_are_refused(seeds, keep, steps, expected):
    with pytest.raises(UserError, match=expected):
        halving_rounds(seeds, keep, steps)


@pytest.fixture(scope="module")
def tiny_sweep(tiny_preset, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    config = build_config(str(tiny_preset), {"prompts": ["a red circle"], "steps": 12, "quiet": True})
    return config, out, sweep(config, out, seeds=4, keep=1)


def test_each_round_goes_on_with_the_best_of_the_last(tiny_sweep):
    config, out, result = tiny_sweep
    records = read_jsonl(out / "rounds.jsonl")
    rounds = halving_rounds(4, 1, 12)
    assert rounds == [Round(4, 1), Round(2, 3), Round(1, 7)]
    by_round = [[r for r in records if r["round"] == number] for number in range(len(rounds))]
    assert [len(entries) for entries in by_round] == [4, 2, 1]
    for earlier, later in zip(by_round, by_round[1:]):
        best = sorted(earlier, key=lambda r: -r["score"])[:len(later)]
        assert {r["seed"] for r in later} == {r["seed"] for r in best}
    assert result.best.seed == by_round[-1][0]["seed"] and result.best.steps == 7
    summary = read_jsonl(out / "summary.jsonl")
    assert [line["seed"] for line in summary][0] == result.best.seed and summary[0]["kept"]
    first = config.seed or 0  # the seeds start at the config's
    assert sorted(line["seed"] for line in summary) == list(range(first, first + 4))
    assert (out / "contact_sheet.png").is_file()


def test_a_survivor_is_the_run_of_its_final_length(tiny_sweep, tiny_preset, tmp_path):
    """Resumed round after round, the best seed's pixels are those of one plain run."""
    _, out, result = tiny_sweep
    plain = generate("a red circle", preset=str(tiny_preset), seed=result.best.seed, steps=result.best.steps,
                     quiet=True, run_dir=str(tmp_path / "plain"))
    assert torch.equal(load_image(out / f"seed-{result.best.seed}" / "final.png"), load_image(plain.final_path))
    assert plain.scores[0] == pytest.approx(result.best.score, abs=1e-6)


def test_a_stopped_sweep_goes_on_to_the_same_result(tiny_sweep, tmp_path, monkeypatch):
    config, out, result = tiny_sweep
    calls, run_to = [], seed_sweep._run_to

    def stop_at_the_fifth_run(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 5:  # a round 1 run: round 0's records are written, the survivors chosen
            raise KeyboardInterrupt
        return run_to(*args, **kwargs)

    monkeypatch.setattr(seed_sweep, "_run_to", stop_at_the_fifth_run)
    with pytest.raises(KeyboardInterrupt):
        sweep(config, tmp_path / "again", seeds=4, keep=1)
    monkeypatch.setattr(seed_sweep, "_run_to", run_to)
    again = sweep(config, tmp_path / "again", seeds=4, keep=1)
    assert [(r.seed, r.steps, r.score) for r in again.runs] == [(r.seed, r.steps, r.score) for r in result.runs]
    assert len(read_jsonl(tmp_path / "again" / "rounds.jsonl")) == 7  # no round run twice
    with pytest.raises(UserError, match="holds a sweep with other settings"):
        sweep(config, tmp_path / "again", seeds=4, keep=2)


def test_the_command(tiny_preset, tmp_path, capsys):
    args = ["sweep", "a red circle", "-p", str(tiny_preset), "--seeds", "3", "--keep", "1", "--steps", "10", "--quiet",
            "--out", str(tmp_path / "out"), "-o", str(tmp_path / "best.png")]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("1. seed ") and printed[-1].endswith("contact_sheet.png")
    best = read_jsonl(tmp_path / "out" / "summary.jsonl")[0]
    assert torch.equal(load_image(tmp_path / "best.png"),
                       load_image(tmp_path / "out" / best["run_dir"] / "final.png"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for extra, expected in ((["--keep", "3"], "--keep 3 must be at least 1 and below --seeds 3"),
                            (["--out", str(tmp_path / "busy")], "is not empty and holds no sweep")):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_a_sweep_is_a_batch_kind(tiny_preset, tmp_path):
    jobs = [{"kind": "sweep", "prompt": "a red circle", "preset": str(tiny_preset), "steps": 10, "seeds": 3, "keep": 1}]
    (result,) = list(vqclip.batch.run(jobs, out=tmp_path / "batch"))
    assert result.ok, result.error
    assert result.files[0].name == "final.png" and result.files[1].name == "contact_sheet.png"
    assert result.score == read_jsonl(result.files[1].parent / "summary.jsonl")[0]["score"]
    with pytest.raises(UserError, match="keep 3 must be below seeds 3"):
        list(vqclip.batch.run([{**jobs[0], "keep": 3}], out=tmp_path / "bad"))
