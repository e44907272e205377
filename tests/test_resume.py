"""Never lose a run: a run killed at any moment and resumed ends with the same pixels."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.errors import UserError
from vqclip.generation import generate, resume
from vqclip.outputs import read_jsonl

STEPS = 10
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def preset(make_tiny_preset):
    return make_tiny_preset(steps=STEPS, checkpoint_every=1, save_every=0, seed=11, lr=0.2)


@pytest.fixture(scope="module")
def reference(preset, tmp_path_factory):
    """The same run, never interrupted."""
    run_dir = tmp_path_factory.mktemp("reference")
    generate("a red circle", preset=str(preset), run_dir=str(run_dir))
    return Image.open(run_dir / "final.png").tobytes()


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def steps_logged(run_dir: Path) -> int:
    log = run_dir / "log.jsonl"
    return len(read_jsonl(log)) if log.exists() else 0


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while steps_logged(run_dir) < step and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)


def test_killed_at_random_moments_and_resumed_gives_the_same_pixels(preset, reference, tmp_path):
    run_dir = tmp_path / "run"
    moments = random.Random(4).sample(range(1, STEPS - 1), 2)  # seeded: the test is repeatable
    process = start(["a red circle", "-p", str(preset), "--run-dir", str(run_dir)])
    for moment in sorted(moments):
        wait_for_step(process, run_dir, moment)
        time.sleep(random.Random(moment).random() * 0.05)  # somewhere inside the next step
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (run_dir / "final.png").exists()
        process = start(["--resume", str(run_dir)])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert Image.open(run_dir / "final.png").tobytes() == reference
    assert [r["step"] for r in read_jsonl(run_dir / "log.jsonl")] == list(range(1, STEPS + 1))


def test_sigint_saves_state_and_exits_130(preset, reference, tmp_path):
    run_dir = tmp_path / "run"
    process = start(["a red circle", "-p", str(preset), "--run-dir", str(run_dir), "checkpoint_every=0"])
    wait_for_step(process, run_dir, 3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    state = torch.load(run_dir / "state.pt", weights_only=True)  # written on the signal, not by schedule
    assert 3 <= state["step"] < STEPS
    assert main(["--resume", str(run_dir)]) == 0
    assert Image.open(run_dir / "final.png").tobytes() == reference


def test_damaged_state_falls_back_to_the_previous_one(preset, reference, tmp_path):
    run_dir = tmp_path / "run"
    seen = []
    generate("a red circle", preset=str(preset), run_dir=str(run_dir),
             callback=lambda info: seen.append(info.step) or info.step < 6)
    state = run_dir / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated, as by a full disk outside vqclip
    result = resume(run_dir)
    assert torch.load(run_dir / "state.pt", weights_only=True)["step"] == STEPS
    assert result.steps_done == STEPS
    assert Image.open(run_dir / "final.png").tobytes() == reference


def test_resume_errors_are_one_line(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "gone")]) == 2
    assert capsys.readouterr().err == f"vqclip: error: {tmp_path / 'gone'} does not exist: a run stopped before " \
        "its folder was made has nothing to resume; start it again\n"
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not a vqclip run folder" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("steps: 3\n")
    (tmp_path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="state"):
        resume(tmp_path)


def test_resume_can_extend_a_finished_run(preset, tmp_path):
    run_dir = tmp_path / "run"
    generate("a red circle", preset=str(preset), run_dir=str(run_dir), steps=4)
    result = resume(run_dir, {"steps": 6})
    assert result.steps_done == 6
    assert [r["step"] for r in read_jsonl(run_dir / "log.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_resume_past_the_asked_steps_says_there_is_nothing_to_do(preset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    generate("a red circle", preset=str(preset), run_dir=str(run_dir), steps=4)
    before = (run_dir / "final.png").read_bytes()
    assert main(["--resume", str(run_dir), "--steps", "3"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"vqclip: warning: {run_dir} has done 4 steps, and 3 were asked: nothing to continue (give --steps above 4 "
        "to extend it)"]
    assert (run_dir / "final.png").read_bytes() == before
