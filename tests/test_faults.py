"""Bad input through the command line: exit status 2, one line on stderr, nothing half-written.

Every row of the table below is run through `vqclip.cli.main([...])` and must end with
  - exit status 2,
  - exactly one line on stderr, starting with `vqclip: error: `, and no traceback anywhere,
  - no final.png in the run folder and no temporary `*.tmp` file anywhere under tmp_path.
A row with `bug=` shows a fault that the library does not handle yet (xfail, strict: once it is
fixed the row passes, the xfail turns into a failure, and the marker must be removed).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import struct
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from vqclip.cli import main

ERROR_PREFIX = "vqclip: error: "


@pytest.fixture(scope="module")
def preset(make_tiny_preset):
    return make_tiny_preset(steps=2)


# ---- input files ------------------------------------------------------------------------------

def png_bytes(width: int = 4, height: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(claimed_width: int, claimed_height: int) -> bytes:
    """A tiny valid 4×4 PNG whose IHDR claims another size (with the CRC fixed to match).

    A reader that trusts the header and allocates the pixels would need width·height·3 bytes.
    """
    data = bytearray(png_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", claimed_width, claimed_height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@dataclass
class Context:
    """What a row may use: the tiny preset, a run folder, and a place for its input files."""

    tmp_path: Path
    preset: Path

    @property
    def run_dir(self) -> Path:
        return self.tmp_path / "run"

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp_path / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return str(path)

    def gen(self, *args: str) -> list[str]:
        """A generate command line with the tiny preset and the run folder."""
        return [*args, "-p", str(self.preset), "--run-dir", str(self.run_dir)]

    def gen_with_preset(self, preset: str, *args: str) -> list[str]:
        return [*args, "-p", preset, "--run-dir", str(self.run_dir)]


@dataclass
class Case:
    id: str
    argv: Callable[[Context], list[str]]
    after: Callable[[Context], None] | None = None  # extra checks once the command has ended
    bug: str | None = None  # a BUG: the reason for a strict xfail
    memory_cap: bool = False  # cap the address space while it runs (inputs that ask for petabytes)


def _tag_preset(ctx: Context) -> str:
    marker = ctx.tmp_path / "PWNED"
    return ctx.file("evil.yaml", f'steps: 2\nsize: !!python/object/apply:os.system ["touch {marker}"]\n')


def _tag_override(ctx: Context) -> str:
    return f'steps=!!python/object/apply:os.system ["touch {ctx.tmp_path / "PWNED"}"]'


def _tag_not_run(ctx: Context) -> None:
    assert not (ctx.tmp_path / "PWNED").exists(), "the YAML's Python tag ran a command"


CASES = [
    # -- names that are not in a registry
    Case("unknown-preset", lambda c: c.gen_with_preset("nope", "a red circle")),
    Case("unknown-key", lambda c: c.gen("a red circle", "stepz=3")),
    Case("unknown-nested-key", lambda c: c.gen("a red circle", "vqgan.nope=1")),
    Case("unknown-nested-key-in-init", lambda c: c.gen("a red circle", "init.wieght=0.5")),
    Case("unknown-optimizer", lambda c: c.gen("a red circle", "optimizer=Adamm")),
    Case("unknown-augmentation-pipeline", lambda c: c.gen("a red circle", "augmentations=nope")),
    Case("unknown-cut_mode", lambda c: c.gen("a red circle", "cut_mode=zigzag")),
    Case("unknown-init.mode", lambda c: c.gen("a red circle", "init.mode=magic")),
    Case("unknown-vqgan.format", lambda c: c.gen("a red circle", "vqgan.format=jpeg")),
    # -- wrong types
    Case("steps=abc", lambda c: c.gen("a red circle", "steps=abc")),
    Case("size=[a,b]", lambda c: c.gen("a red circle", "size=[a,b]")),
    Case("lr=x", lambda c: c.gen("a red circle", "lr=x")),
    Case("clip.models-weight=x", lambda c: c.gen("a red circle", "clip.models=[{weight: x}]")),
    Case("schedule-key-not-a-step", lambda c: c.gen("schedule={a: b}")),
    # -- values out of range
    Case("steps=0", lambda c: c.gen("a red circle", "steps=0")),
    Case("steps=-3", lambda c: c.gen("a red circle", "steps=-3")),
    Case("--steps -3", lambda c: c.gen("a red circle", "--steps", "-3")),
    Case("batch_size=0", lambda c: c.gen("a red circle", "batch_size=0")),
    Case("--batch 0", lambda c: c.gen("a red circle", "--batch", "0")),
    Case("lr=0", lambda c: c.gen("a red circle", "lr=0")),
    Case("lr=inf", lambda c: c.gen("a red circle", "lr=inf")),
    Case("lr=nan", lambda c: c.gen("a red circle", "lr=nan")),
    Case("size-not-multiple-of-factor", lambda c: c.gen("a red circle", "--size", "33", "32")),
    Case("size-0", lambda c: c.gen("a red circle", "--size", "0", "32")),
    Case("size-one-number-in-config", lambda c: c.gen("a red circle", "size=[32]")),
    Case("schedule-negative-step", lambda c: c.gen("schedule={-1: a red circle}")),
    # -- prompts
    Case("prompt-a:1:1.2.3", lambda c: c.gen("a:1:1.2.3")),
    Case("prompt-a:--1", lambda c: c.gen("a:--1")),
    Case("prompt-weight-without-text", lambda c: c.gen(":2")),
    Case("prompt-infinite-weight", lambda c: c.gen("a red circle:inf")),
    Case("no-prompt", lambda c: c.gen()),
    Case("noise-prompt-not-a-seed", lambda c: c.gen("a red circle", "--noise-prompt", "abc")),
    # -- init images and image prompts
    Case("init-image-missing", lambda c: c.gen("a red circle", "--init-image", str(c.tmp_path / "nope.png"))),
    Case("init-image-text-file.png", lambda c: c.gen(
        "a red circle", "--init-image", c.file("notes.png", "this is not a picture\n"))),
    Case("init-image-bomb-100000x100000", lambda c: c.gen(
        "a red circle", "--init-image", c.file("bomb.png", bomb_png(100_000, 100_000)))),
    Case("init-image-just-over-limit-8200x8200", lambda c: c.gen(
        "a red circle", "--init-image", c.file("big.png", bomb_png(8200, 8200)))),
    Case("image-prompt-bomb-100000x100000", lambda c: c.gen(
        "a red circle", "--image-prompt", c.file("bomb.png", bomb_png(100_000, 100_000)) + ":0.5")),
    Case("image-prompt-missing", lambda c: c.gen("a red circle", "--image-prompt", str(c.tmp_path / "nope.png"))),
    Case("init-image-is-a-folder", lambda c: c.gen("a red circle", "--init-image", str(c.tmp_path))),
    # -- presets: names are never paths; YAML is data, never code
    Case("preset-name-with-dotdot", lambda c: c.gen_with_preset("../default", "a red circle")),
    Case("preset-name-with-slash", lambda c: c.gen_with_preset("shipped/default", "a red circle")),
    Case("preset-yaml-python-tag", lambda c: c.gen_with_preset(_tag_preset(c), "a red circle"), after=_tag_not_run),
    Case("preset-yaml-is-a-list", lambda c: c.gen_with_preset(c.file("list.yaml", "- steps: 2\n"), "a red circle")),
    Case("preset-yaml-broken", lambda c: c.gen_with_preset(c.file("broken.yaml", "steps: [1, 2\n"), "a red circle")),
    Case("augmentation-yaml-python-tag", lambda c: c.gen(
        "a red circle", "augmentations=" + c.file("aug.yaml", "- !!python/name:os.system {}\n"))),
    # -- --from, info, models, presets
    Case("from-image-without-metadata", lambda c: ["--from", c.file("plain.png", png_bytes()),
                                                   "--run-dir", str(c.run_dir)]),
    Case("from-missing-image", lambda c: ["--from", str(c.tmp_path / "nope.png"), "--run-dir", str(c.run_dir)]),
    Case("info-png-without-metadata", lambda c: ["info", c.file("plain.png", png_bytes())]),
    Case("info-missing-file", lambda c: ["info", str(c.tmp_path / "nope.png")]),
    Case("info-text-file", lambda c: ["info", c.file("notes.txt", "hello\n")]),
    Case("models-download-unknown-name", lambda c: ["models", "download", "unknown-name"]),
    Case("models-check-missing-config", lambda c: [
        "models", "check", f"vqgan.config={c.tmp_path / 'nope.yaml'}", f"vqgan.checkpoint={c.tmp_path / 'nope.ckpt'}"]),
    Case("models-unknown-action", lambda c: ["models", "fetch"]),
    Case("presets-show-nope", lambda c: ["presets", "show", "nope"]),
    Case("presets-show-dotdot", lambda c: ["presets", "show", "../default"]),
    # -- the command line itself
    Case("unknown-flag", lambda c: c.gen("a red circle", "--stepz", "3")),
    Case("--size-one-number", lambda c: c.gen("a red circle", "--size", "64")),
    Case("--steps-not-a-number", lambda c: c.gen("a red circle", "--steps", "many")),
    Case("run-dir-is-a-file", lambda c: ["a red circle", "-p", str(c.preset), "--run-dir", c.file("afile", "x")]),

    # -- once tracebacks: each of these escaped as an exception before it was fixed
    Case("device-unknown", lambda c: c.gen("a red circle", "device=nope")),
    Case("device-cuda:99", lambda c: c.gen("a red circle", "device=cuda:99")),
    Case("seed-too-large", lambda c: c.gen("a red circle", "seed=99999999999999999999999")),
    Case("size-petapixels", lambda c: c.gen("a red circle", f"size=[{2 ** 51},2]"), memory_cap=True),
    Case("cutn-huge", lambda c: c.gen("a red circle", f"cutn={10 ** 15}"), memory_cap=True),
    Case("optimizer-LBFGS", lambda c: c.gen("a red circle", "optimizer=LBFGS")),
    Case("optimizer-SparseAdam", lambda c: c.gen("a red circle", "optimizer=SparseAdam")),
    Case("output-is-a-folder", lambda c: c.gen("a red circle", "-o", str(c.tmp_path))),
    Case("output-parent-not-creatable", lambda c: c.gen("a red circle", "-o", c.file("afile", "x") + "/x.png")),
    Case("interpolation-missing-key", lambda c: c.gen("a red circle", "description=${oops}")),
    Case("interpolation-env", lambda c: c.gen("a red circle", "outputs_root=${oc.env:VQCLIP_TEST_NO_SUCH_VAR}")),
    Case("yaml-parser-error-in-override", lambda c: c.gen("a red circle", "prompts=[${oops}]")),
    Case("yaml-parser-error-}{", lambda c: c.gen("a red circle", "description=}{")),
    Case("unclosed-list-in-override", lambda c: c.gen("a red circle", "size=[32, 32")),
    Case("python-tag-in-override", lambda c: c.gen("a red circle", _tag_override(c)), after=_tag_not_run),
    Case("mapping-for-a-list-key", lambda c: c.gen("a red circle", "lr_drops={-1: a}")),
    Case("section-set-to-a-scalar", lambda c: c.gen("a red circle", "init=3")),
]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with its output captured; an exception that escapes is what Python would show."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:  # noqa: BLE001 - the point is to see what escapes
            traceback.print_exc(file=err)
            code = 1
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def address_space_cap(extra_bytes: int = 6 * 2**30):
    """While the block runs, allocations beyond (the current size + extra_bytes) fail at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        current = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    cap = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_table_is_big_enough():
    assert len([case for case in CASES if not case.bug]) >= 24
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input_is_one_line_and_exit_2_with_no_partial_output(case, preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written relative to the working folder stays in tmp_path
    monkeypatch.delenv("VQCLIP_TEST_NO_SUCH_VAR", raising=False)
    ctx = Context(tmp_path, preset)
    argv = [str(arg) for arg in case.argv(ctx)]
    guard = address_space_cap() if case.memory_cap else contextlib.nullcontext()
    with guard:
        code, out, err = run_main(argv)

    assert "Traceback" not in err + out, err
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith(ERROR_PREFIX) and len(lines[0]) > len(ERROR_PREFIX), lines[0]
    assert not (ctx.run_dir / "final.png").exists(), "a failed run left a final.png"
    leftovers = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.tmp"))
    assert not leftovers, f"temporary files left behind: {leftovers}"
    if case.after:
        case.after(ctx)


@pytest.mark.parametrize("where", ["preset", "override", "augmentations"])
def test_python_tags_never_run(where, preset, tmp_path, monkeypatch):
    """Whatever the message looks like (some are BUG rows above), the tagged command never runs."""
    monkeypatch.chdir(tmp_path)
    ctx = Context(tmp_path, preset)
    marker = tmp_path / "PWNED"
    command = f'!!python/object/apply:os.system ["touch {marker}"]'
    argv = {"preset": lambda: ctx.gen_with_preset(ctx.file("evil.yaml", f"steps: {command}\n"), "a red circle"),
            "override": lambda: ctx.gen("a red circle", f"steps={command}"),
            "augmentations": lambda: ctx.gen("a red circle", "augmentations=" + ctx.file("aug.yaml", f"- {command}\n")),
            }[where]()
    code, _, _ = run_main(argv)
    assert code != 0
    _tag_not_run(ctx)


def test_image_prompt_error_names_the_image_prompt(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = Context(tmp_path, preset)
    code, _, err = run_main(ctx.gen("a red circle", "--image-prompt", str(tmp_path / "nope.png")))
    assert code == 2
    assert "init.image" not in err and "image_prompts[0]" in err, err


def test_bomb_is_refused_from_the_header_in_bounded_memory(preset, tmp_path, monkeypatch):
    """A 100000×100000 PNG of a few dozen bytes is refused before any pixel is decoded: with the
    address space capped at a few GB above the current size (its pixels would need 30 GB)."""
    monkeypatch.chdir(tmp_path)
    ctx = Context(tmp_path, preset)
    bomb = ctx.file("bomb.png", bomb_png(100_000, 100_000))
    assert os.path.getsize(bomb) < 200
    with address_space_cap(4 * 2**30):
        code, _, err = run_main(ctx.gen("a red circle", "--init-image", bomb))
    assert code == 2 and err.startswith(ERROR_PREFIX) and "large" in err, err
