"""The command line's own behaviour: what a bare or mistyped command does, --version, Ctrl-C's message,
and a broken torch/torchvision pair told in one line instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

import vqclip
from vqclip.cli import COMMANDS, main


def test_a_bare_vqclip_prints_the_usage_and_starts_nothing(capsys, monkeypatch):
    monkeypatch.setitem(COMMANDS, "generate", lambda argv: pytest.fail("a bare vqclip must not generate"))
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vqclip") and "presets" in out and "--preset" in out


@pytest.mark.parametrize("argv, suggestion", [
    (["presest", "list"], "did you mean `vqclip presets list`?"),
    (["vidoe", "animate", "a cat"], "did you mean `vqclip video animate 'a cat'`?"),
    (["trian"], "did you mean `vqclip train`?"),
])
def test_a_mistyped_command_is_not_taken_as_a_prompt(argv, suggestion, capsys, monkeypatch):
    monkeypatch.setattr("vqclip.generation.generate_from_cli", lambda **kw: pytest.fail("must not generate"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and suggestion in err
    assert f"to draw it as a prompt: vqclip generate {argv[0]}" in err


def test_words_far_from_any_command_stay_prompts(monkeypatch):
    """A prompt is never refused for looking unlike a command; `vqclip generate WORD` always draws."""
    seen = []
    monkeypatch.setattr("vqclip.generation.generate_from_cli", lambda **kw: seen.append(kw["overrides"]["prompts"]))
    for argv in (["forest"], ["a", "red", "circle"], ["Trian"], ["generate", "trian"]):
        with pytest.raises(AttributeError):  # the fake returns None: the command got as far as generating
            main(argv)
    assert seen == [["forest"], ["a", "red", "circle"], ["Trian"], ["trian"]]


def test_version(capsys):
    assert main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"vqclip {vqclip.__version__} (torch ") and "open_clip" in line


def test_an_interrupt_without_a_message_still_says_something(capsys, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, "info", interrupted)
    assert main(["info", "x.png"]) == 130
    assert capsys.readouterr().err.strip() == "vqclip: interrupted"


def test_a_reader_that_stops_reading_is_no_error(tmp_path):
    """`vqclip presets show default | head -1`: the rest of the output meets a pipe nobody reads."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `head` does once it has its line
    try:
        done = subprocess.run([sys.executable, "-m", "vqclip", "presets", "show", "default"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141


def test_a_torchvision_built_for_another_torch_is_one_line(tmp_path):
    """What a CPU torch beside PyPI's CUDA torchvision does at import (`operator torchvision::nms does not
    exist`), made here by a torchvision package of our own that fails the same way: one line naming both
    versions and the pip command, exit 2, instead of a 40-line traceback."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    info = tmp_path / "site" / "torchvision-0.99.0+cu999.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0+cu999\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-m", "vqclip", "models", "check", "--preset", "shapes"],
                          capture_output=True, text=True, env=env, timeout=300)
    torch = metadata.version("torch")  # PyPI's builds carry no +cpu/+cu tag here; the PyTorch index's do
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    minor, patch = torch.split("+")[0].split(".")[1:3]
    assert f"torchvision 0.99.0+cu999 does not work with torch {torch} " in err
    assert f"pip install torchvision==0.{int(minor) + 15}.{patch}" in err
