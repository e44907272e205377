"""Bad input to `vqclip video ...`: exit status 2, one line on stderr, nothing written.

Each row runs `vqclip.cli.main([...])` in an empty working folder holding only the inputs the row
made; afterwards the folder must hold exactly those inputs: no output video, no run folder, no
temporary file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from vqclip.cli import main

ERROR_PREFIX = "vqclip: error: "


@dataclass
class Inputs:
    """A row's folder, where its input files are made; `inputs / "name"` is a path in it."""

    folder: Path
    draw_key: Callable  # conftest's draw_key and write_clip fixtures
    write_clip: Callable

    def __truediv__(self, name: str) -> Path:
        return self.folder / name


def red(folder: Inputs) -> str:
    return str(folder.draw_key(folder / "red.png", "circle", "red"))


def small_blue(folder: Inputs) -> str:
    return str(folder.draw_key(folder / "small.png", "square", "blue", size=32))


def garbage_video(folder: Inputs) -> str:
    path = folder / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return str(path)


def one_frame_clip(folder: Inputs) -> str:
    return str(folder.write_clip(folder / "one", 1))


def empty_folder(folder: Inputs) -> str:
    (folder / "empty").mkdir()
    return str(folder / "empty")


def not_a_run(folder: Inputs) -> str:
    (folder / "plain").mkdir()
    (folder / "plain" / "config.yaml").write_text("steps: 3\n")
    return str(folder / "plain")


def clip(folder: Inputs) -> str:
    return str(folder.write_clip(folder / "clip", 2))


@dataclass
class Case:
    name: str
    args: Callable[[Inputs], list[str]]  # the command line, given the row's folder (inputs made there)
    says: str  # a piece of the one-line message


ANIMATE = ["video", "animate", "a red circle", "-p", "shapes-zoom"]
MORPH = ["-p", "shapes-morph"]

CASES = [
    Case("interpolate with one prompt key", lambda d: ["video", "interpolate", "a red circle", *MORPH],
         "at least two keys"),
    Case("interpolate with one image key", lambda d: ["video", "interpolate", red(d), *MORPH], "at least two keys"),
    Case("interpolate with no key", lambda d: ["video", "interpolate", *MORPH], "got 0"),
    Case("interpolate an unreadable video", lambda d: ["video", "interpolate", garbage_video(d), *MORPH],
         "cannot read video"),
    Case("restyle an unreadable video", lambda d: ["video", "restyle", garbage_video(d), "a blue square",
                                                   "-p", "shapes-zoom"], "cannot read video"),
    Case("restyle a missing video", lambda d: ["video", "restyle", str(d / "nowhere.mp4"), "a blue square"],
         "input: no such file or folder"),
    Case("restyle a folder without frames", lambda d: ["video", "restyle", empty_folder(d), "a blue square"],
         "holds no images"),
    Case("up-convert a one-frame clip", lambda d: ["video", "interpolate", one_frame_clip(d), *MORPH],
         "at least two"),
    Case("keys of different sizes", lambda d: ["video", "interpolate", red(d), small_blue(d), *MORPH],
         "small.png is 32×32 but key 1"),
    Case("a video among several keys", lambda d: ["video", "interpolate", red(d), clip(d), *MORPH],
         "is a video or folder"),
    Case("a malformed zoom schedule", lambda d: [*ANIMATE, "video.zoom=0: 1.0, 30 1.05"],
         "at character 12 ('1') expected ':' after frame 30"),
    Case("a malformed angle schedule", lambda d: [*ANIMATE, "video.angle=0: 1, 10: two"],
         "at character 11 ('t') expected a number for frame 10"),
    Case("a malformed schedule of another key", lambda d: [*ANIMATE, "video.schedules.lr=0: 0.1; 5: 0.2"],
         "at character 7 (';') expected ','"),
    Case("a schedule for a key that is not a number", lambda d: [*ANIMATE, "video.schedules.optimizer=0: 1"],
         "not a numeric config key"),
    Case("frames 0", lambda d: [*ANIMATE, "--frames", "0"], "--frames must be at least 1, not 0"),
    Case("frames below 0", lambda d: [*ANIMATE, "--frames", "-4"], "--frames must be at least 1, not -4"),
    Case("fps 0", lambda d: [*ANIMATE, "--fps", "0"], "--fps must be a positive number"),
    Case("fps below 0", lambda d: [*ANIMATE, "--fps", "-12"], "--fps must be a positive number"),
    Case("between 0", lambda d: ["video", "interpolate", "a", "b", *MORPH, "--between", "0"],
         "--between must be at least 1 frame, not 0"),
    Case("between below 0", lambda d: ["video", "interpolate", "a", "b", *MORPH, "--between", "-1"],
         "--between must be at least 1"),
    Case("an unknown output extension", lambda d: [*ANIMATE, "-o", str(d / "out.avi")],
         "unknown video extension '.avi'; supported: .mp4 (H.264), .gif, or a path without an extension"),
    Case("an unknown method", lambda d: ["video", "interpolate", "a", "b", *MORPH, "--method", "cubic"],
         "valid choices: lerp, slerp"),
    Case("an unknown ease", lambda d: ["video", "interpolate", "a", "b", *MORPH, "--ease", "bouncy"],
         "valid choices: cosine, ease-in-out, linear"),
    Case("smoothing of 1 or more", lambda d: [*ANIMATE, "video.smoothing=1.5"], "video.smoothing"),
    Case("restyle without a prompt", lambda d: ["video", "restyle", clip(d), "-p", "shapes-zoom"],
         "restyle needs a prompt"),
    Case("an unknown video action", lambda d: ["video", "morph", "a", "b"], "invalid choice: 'morph' (choose from 'animate', 'interpolate', 'restyle')"),
    Case("resume a folder that is no video run", lambda d: ["video", "--resume", not_a_run(d)],
         "is not a vqclip video run folder"),
    Case("size auto (a single-image setting)", lambda d: [*ANIMATE, "size=auto"], "a video needs one size"),
    # A key or input that looks like a file and is not there is a typo, not a prompt to draw.
    Case("a mistyped image key", lambda d: ["video", "interpolate", "red-circel.png", red(d), *MORPH],
         "key 1: no such file or folder 'red-circel.png'"),
    Case("a missing image key given as a path", lambda d: ["video", "interpolate", red(d), str(d / "keys" / "blue"),
                                                           *MORPH], "key 2: no such file or folder '"),
    Case("a missing latent key", lambda d: ["video", "interpolate", red(d), "blue.pt", *MORPH],
         "key 2: no such file or folder 'blue.pt'"),
    Case("a missing video to up-convert", lambda d: ["video", "interpolate", "clip.mp4", *MORPH],
         "input: no such file or folder 'clip.mp4'"),
    Case("a missing init image for animate", lambda d: [*ANIMATE, "init.mode=image", "init.image=nowhere.png"],
         "init.image: no such file 'nowhere.png'"),
    Case("frames that is not a number", lambda d: [*ANIMATE, "--frames", "many"], "invalid int value"),
]


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_video_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys, draw_key,
                                                               write_clip):
    monkeypatch.chdir(tmp_path)  # the default outputs/ folder would appear here
    args = case.args(Inputs(tmp_path, draw_key, write_clip))
    inputs = files_under(tmp_path)
    out = tmp_path / "video.mp4"
    if "-o" not in args and "--resume" not in args:
        args += ["-o", str(out)]
    status = main([*args, "--run-dir", str(tmp_path / "run")] if args[1] != "--resume" else args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), captured.err
    assert case.says in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert files_under(tmp_path) == inputs  # no video, no run folder, no outputs/, no temporary file


def test_the_table_has_every_kind_of_bad_input_the_issue_names():
    names = " ".join(case.name for case in CASES)
    for kind in ("one prompt key", "unreadable video", "different sizes", "malformed", "frames 0", "between 0",
                 "fps 0", "unknown output extension", "mistyped image key", "missing init image", "restyle a missing"):
        assert kind in names
    assert len(CASES) >= 20


def test_a_size_the_vqgan_cannot_take_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, draw_key):
    """Checked once the models are loaded (the factor is the VQGAN's), still before the run folder."""
    monkeypatch.chdir(tmp_path)
    red = draw_key(tmp_path / "red.png", "circle", "red", size=30)
    blue = draw_key(tmp_path / "blue.png", "square", "blue", size=30)
    inputs = files_under(tmp_path)
    status = main(["video", "interpolate", str(red), str(blue), "-p", "shapes-morph", "-o", str(tmp_path / "m.gif")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "not a multiple of the VQGAN's factor 4: try 28 or 32" in lines[0]
    assert files_under(tmp_path) == inputs


def test_a_latent_key_that_does_not_fit_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                             draw_key):
    import torch

    from vqclip.outputs import save_latent

    monkeypatch.chdir(tmp_path)
    red = draw_key(tmp_path / "red.png", "circle", "red")
    save_latent(tmp_path / "wrong.pt", torch.zeros(1, 64, 8, 8))  # the shapes VQGAN's 64 px frames need 16×16
    inputs = files_under(tmp_path)
    status = main(["video", "interpolate", str(red), str(tmp_path / "wrong.pt"), "-p", "shapes-morph",
                   "-o", str(tmp_path / "m.gif")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "need (64, 16, 16)" in lines[0], lines
    assert files_under(tmp_path) == inputs


def test_the_python_api_refuses_missing_key_files_too(tmp_path, monkeypatch):
    """`video.interpolate(["red.png", "blue.png"])` in a folder without them: an error, not two prompts."""
    from vqclip import video
    from vqclip.errors import UserError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="key 1: no such file or folder 'red.png'"):
        video.interpolate(["red.png", "blue.png"], preset="shapes-morph", output="morph.gif")
    with pytest.raises(UserError, match="input: no such file or folder 'nowhere.mp4'"):
        video.restyle("nowhere.mp4", "a blue square", preset="shapes-zoom", output="styled.gif")
    assert files_under(tmp_path) == set()
