"""A killed video run continues from its last finished frame and ends with the same frames."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from vqclip import video
from vqclip.cli import main

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 5
SETTINGS = ["cutn=4", "seed=5", "video.first_frame_steps=3", "video.steps_per_frame=2", "video.smoothing=0.3",
            "video.zoom=0: 1.0, 4: 1.08", "video.angle=3"]


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the video run made no progress"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(shapes_models, tmp_path_factory):
    """The same animation, never interrupted."""
    run_dir = tmp_path_factory.mktemp("reference")
    video.animate("a red circle", preset="shapes-zoom", models=shapes_models, run_dir=str(run_dir), quiet=True,
                  dotlist=[f"video.frames={FRAMES}", *SETTINGS])
    return run_dir, [pixels(run_dir / "frames" / f"{i:05d}.png") for i in range(FRAMES)]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_stopped_then_killed_video_run_resumes_from_the_last_finished_frame(reference, tmp_path):
    run_dir = tmp_path / "run"
    out = tmp_path / "zoom.gif"
    frames = run_dir / "frames"
    # Ctrl-C: the current step finishes, the run says how to continue, exit status 130.
    process = start(["video", "animate", "a red circle", "-p", "shapes-zoom", "--frames", str(FRAMES),
                     "--run-dir", str(run_dir), "-o", str(out), "--quiet", *SETTINGS])
    try:
        wait_for(frames / "00000.pt", process)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate()
    assert process.returncode == 130 and f"vqclip video --resume {run_dir}" in stderr, stderr
    first_frame_written = (frames / "00000.pt").stat().st_mtime_ns

    # Resumed, then killed outright (SIGKILL: nothing is saved on the way out).
    process = start(["video", "--resume", str(run_dir), "--quiet"])
    try:
        wait_for(frames / "00002.pt", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    finished = sorted(p.name for p in frames.glob("*.pt"))
    assert "00002.pt" in finished and f"{FRAMES - 1:05d}.pt" not in finished and not out.exists()

    assert main(["video", "--resume", str(run_dir), "--quiet"]) == 0
    assert (frames / "00000.pt").stat().st_mtime_ns == first_frame_written  # finished frames are not redone
    assert [pixels(frames / f"{i:05d}.png") for i in range(FRAMES)] == reference[1]
    with Image.open(out) as gif:
        assert gif.n_frames == FRAMES


def test_resuming_a_finished_run_only_writes_the_video_again(reference, shapes_models):
    run_dir = reference[0]
    stamps = [p.stat().st_mtime_ns for p in sorted((run_dir / "frames").glob("*.pt"))]
    result = video.resume(run_dir, models=shapes_models)
    assert [p.stat().st_mtime_ns for p in sorted((run_dir / "frames").glob("*.pt"))] == stamps
    assert result.output == run_dir / "video.mp4" and len(result.frames) == FRAMES
