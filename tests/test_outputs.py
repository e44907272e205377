"""Run folders, PNG metadata, state, latents and logs: what a run leaves on disk."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vqclip import outputs
from vqclip.errors import UserError
from vqclip.outputs import (
    append_jsonl,
    environment_info,
    load_image,
    load_latent,
    load_state,
    load_state_or_previous,
    new_run_dir,
    prepare_run_dir,
    read_jsonl,
    read_metadata,
    save_latent,
    save_png,
    save_state,
    slugify,
    write_json,
    write_yaml,
)

DAY = datetime(2024, 5, 17, 12, 0)
REPO = Path(__file__).resolve().parents[1]


def leftovers(folder: Path, *keep: str) -> list[str]:
    """Names in folder other than `keep`: temporary files that a failed write left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---------------------------------------------------------------------------- slugify


@pytest.mark.parametrize("text, slug", [
    ("A cat, in the style of Van Gogh!", "a-cat-in-the-style-of-van-gogh"),
    ("  --hello...world--  ", "hello-world"),
    ("Crème brûlée à l'Œuvre", "creme-brulee-a-l-uvre"),  # Œ has no ASCII form: dropped
    ("ｆｕｌｌｗｉｄｔｈ ①", "fullwidth-1"),  # NFKD folds compatibility forms
    ("東京の夜", "untitled"),
    ("", "untitled"),
    ("...", "untitled"),
    ("trailing dots...", "trailing-dots"),
    ("a/b\\c:d*e?f\"g<h>i|j", "a-b-c-d-e-f-g-h-i-j"),
    ("con", "con_"),
    ("CON", "con_"),
    ("aux", "aux_"),
    ("Nul", "nul_"),
    ("com1", "com1_"),
    ("LPT9", "lpt9_"),
    ("COM¹", "com1_"),
    ("CON.txt", "con-txt"),  # the dot is gone, so this is no longer the reserved CON
    ("console", "console"),
    ("com10", "com10"),
])
def test_slug_table(text, slug):
    assert slugify(text) == slug


def test_slug_is_cut_at_a_word_boundary():
    text = "a photograph of an astronaut riding a horse on the moon in the style of Monet"
    slug = slugify(text)
    assert len(slug) <= 60 and text.lower().replace(" ", "-").startswith(slug)
    assert slug == "a-photograph-of-an-astronaut-riding-a-horse-on-the-moon-in"
    assert slugify("x" * 200) == "x" * 60  # no boundary: a hard cut
    assert slugify("ab-" + "x" * 100, max_len=10) == "ab-xxxxxxx"  # boundary too early: hard cut
    assert slugify("abcdefghij-k", max_len=10) == "abcdefghij"  # a '-' right after the limit


def test_windows_reserved_names_with_extension_are_recognised():
    for name in ("CON", "con.txt", "Aux.tar.gz", "lpt1", "COM9.png", "nul "):
        assert outputs._is_windows_reserved(name), name
    for name in ("cone", "con-txt", "com", "lpt10", "auxiliary"):
        assert not outputs._is_windows_reserved(name), name


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=8, max_value=80))
def test_slug_is_always_a_safe_folder_name(text, max_len):
    slug = slugify(text, max_len)
    assert 1 <= len(slug) <= max_len
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*_?", slug) and not slug.endswith("-")
    assert not outputs._is_windows_reserved(slug)


# ---------------------------------------------------------------------------- run folders


def test_run_dir_numbers_follow_the_highest_existing(tmp_path):
    first = new_run_dir(tmp_path, "A red fox", now=DAY)
    assert first == tmp_path / "2024-05-17" / "0001-a-red-fox" and first.is_dir()
    day = first.parent
    (day / "0007-old-run").mkdir()
    (day / "notes").mkdir()
    (day / "0012-a-file").write_text("not a folder, but its number is taken")
    assert new_run_dir(tmp_path, "a red fox", now=DAY).name == "0013-a-red-fox"
    assert new_run_dir(tmp_path, "", now=DAY).name == "0014-untitled"
    assert new_run_dir(tmp_path, "x", now=datetime(2024, 5, 18)).name == "0001-x"  # a new day


def test_run_dir_takes_the_next_number_when_one_is_taken_meanwhile(tmp_path, monkeypatch):
    # Two starts that both scanned the folder before either created its run see the same highest
    # number: the loser must take the next one, not share the folder.
    monkeypatch.setattr(outputs, "_highest_number", lambda folder: 0)
    names = [new_run_dir(tmp_path, "same", now=DAY).name for _ in range(3)]
    assert names == ["0001-same", "0002-same", "0003-same"]


def test_run_dir_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create a run folder"):
        new_run_dir(tmp_path / "file", "x", now=DAY)


def test_eight_threads_get_eight_distinct_run_dirs(tmp_path):
    barrier, found, errors = threading.Barrier(8), [], []

    def start():
        barrier.wait()
        try:
            found.extend(new_run_dir(tmp_path, "same prompt", now=DAY) for _ in range(5))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(found)) == 40
    assert sorted(p.name for p in found) == [f"{i:04d}-same-prompt" for i in range(1, 41)]


def test_two_processes_get_distinct_run_dirs(tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from vqclip.outputs import new_run_dir
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        for _ in range(25):
            print(new_run_dir(Path({str(tmp_path / "out")!r}), "same", now=datetime(2024, 5, 17)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(0.3)  # let both import and wait for the start signal
    go.touch()
    found = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        found += out.split()
    assert len(found) == 50 and len(set(found)) == 50
    names = sorted(p.name for p in (tmp_path / "out" / "2024-05-17").iterdir())
    assert names == [f"{i:04d}-same" for i in range(1, 51)]


def test_prepare_run_dir(tmp_path):
    chosen = prepare_run_dir(tmp_path / "a" / "b")
    assert chosen.is_dir()
    (chosen / "keep.txt").write_text("x")
    assert prepare_run_dir(str(chosen)) == chosen and (chosen / "keep.txt").exists()
    with pytest.raises(UserError, match="not a folder"):
        prepare_run_dir(chosen / "keep.txt")


# ---------------------------------------------------------------------------- PNG and metadata

META = {"prompt": "Köln bei Nacht — 東京 🌸", "weights": [1.0, -0.5], "seed": 7, "stop": None,
        "nested": {"lr": 0.1, "size": [16, 12]}}


def test_png_round_trip_of_metadata_and_exact_pixels(tmp_path):
    levels = torch.randint(0, 256, (3, 12, 16), generator=torch.Generator().manual_seed(0))
    path = tmp_path / "image.png"
    save_png(path, levels.float() / 255, META)
    assert read_metadata(path) == META
    assert torch.equal((load_image(path) * 255).round().to(torch.int64), levels[None])
    raw = path.read_bytes()
    assert b"iTXt" in raw and b"vqclip\0" in raw and "東京".encode() in raw  # UTF-8, uncompressed
    assert leftovers(tmp_path, "image.png") == []


def test_png_takes_batched_tensors_pil_and_numpy(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    for name, image in [("batched", torch.from_numpy(rgb).permute(2, 0, 1)[None] / 255),
                        ("pil", Image.fromarray(rgb)), ("numpy", rgb)]:
        save_png(tmp_path / f"{name}.png", image, {"name": name})
        assert read_metadata(tmp_path / f"{name}.png") == {"name": name}
        assert np.array_equal(np.array(Image.open(tmp_path / f"{name}.png")), rgb), name
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", torch.zeros(4, 5, 5), {})
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", rgb.astype(np.float32), {})
    with pytest.raises(TypeError):
        save_png(tmp_path / "bad.png", [[0]], {})


def test_png_rounds_clamps_and_blackens_nan(tmp_path):
    x = torch.tensor([0.4 / 255, 0.6 / 255, 254.6 / 255, -1.0, 2.0, float("nan")]).reshape(1, 1, 6)
    save_png(tmp_path / "r.png", x.expand(3, 1, 6), {})
    assert np.array(Image.open(tmp_path / "r.png"))[0, :, 0].tolist() == [0, 1, 255, 0, 255, 0]


def test_read_metadata_refuses_other_files(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="has no vqclip metadata: it was not made by vqclip"):
        read_metadata(tmp_path / "plain.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.jpg")
    with pytest.raises(UserError, match="has no vqclip metadata"):
        read_metadata(tmp_path / "photo.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read image"):
        read_metadata(tmp_path / "notes.png")
    with pytest.raises(UserError, match="cannot read image"):
        read_metadata(tmp_path / "missing.png")


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width×height: what a decompression bomb looks like."""
    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the chunk CRC over type+data
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [9000, 100_000])  # 9000²: over our limit, under PIL's own
def test_load_image_refuses_decompression_bombs_from_the_header(tmp_path, side):
    bomb = png_claiming_size(tmp_path / "bomb.png", side, side)
    start = time.perf_counter()
    with pytest.raises(UserError, match="too large"):
        load_image(bomb)
    assert time.perf_counter() - start < 1.0


def test_load_image_errors_are_user_errors(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(UserError, match="cannot read init image"):
        load_image(tmp_path / "text.png")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(UserError, match="cannot read init image"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(UserError, match="cannot read init image"):
        load_image(tmp_path / "missing.png")


def test_load_image_converts_resizes_and_whitens_transparency(tmp_path):
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black shows as white
    rgba.save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 6, 8) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and x[0, :, 1, 1].tolist() == [1.0, 0.0, 0.0]
    assert load_image(tmp_path / "a.png", size=(4, 3)).shape == (1, 3, 3, 4)  # (width, height)
    Image.fromarray(np.full((2, 2), 65535, np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey
    assert load_image(tmp_path / "deep.png").min().item() == 1.0


def test_load_image_applies_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (4, 2)).save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").shape == (1, 3, 4, 2)


def test_failed_png_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    save_png(path, torch.zeros(3, 4, 4), {"version": 1})
    before = path.read_bytes()

    def write_half_then_fail(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n half an image")
        raise OSError("disk on fire")

    monkeypatch.setattr(Image.Image, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk on fire"):
        save_png(path, torch.ones(3, 4, 4), {"version": 2})
    assert path.read_bytes() == before and leftovers(tmp_path, "image.png") == []


# ---------------------------------------------------------------------------- JSON, YAML, logs


def test_write_json_and_yaml(tmp_path):
    data = {"zeta": 1, "alpha": (1, 2), "path": Path("a") / "b", "text": "Größe 東京",
            "array": np.arange(3), "tensor": torch.tensor(0.5), "stop": float("-inf")}
    write_yaml(tmp_path / "config.yaml", data)
    text = (tmp_path / "config.yaml").read_text(encoding="utf-8")
    assert "Größe 東京" in text and text.index("zeta") < text.index("alpha")  # caller's order
    assert yaml.safe_load(text) == {"zeta": 1, "alpha": [1, 2], "path": str(Path("a") / "b"),
                                    "text": "Größe 東京", "array": [0, 1, 2], "tensor": 0.5,
                                    "stop": float("-inf")}
    write_json(tmp_path / "result.json", data)
    assert json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))["array"] == [0, 1, 2]
    assert leftovers(tmp_path, "config.yaml", "result.json") == []


def test_jsonl_skips_a_line_cut_by_a_killed_process(tmp_path):
    log = tmp_path / "log.jsonl"
    for i in range(3):
        append_jsonl(log, {"step": i, "loss": 1.0 / (i + 1), "text": "multi\nline 東京"})
    assert len(log.read_text(encoding="utf-8").splitlines()) == 3  # one record, one line
    with open(log, "ab") as f:
        f.write('{"step": 3, "text": "東'.encode()[:-1])  # killed mid-line, mid-character
    assert [r["step"] for r in read_jsonl(log)] == [0, 1, 2]
    append_jsonl(log, {"step": 3}, fsync=True)  # the resumed run's record is not glued on
    assert [r["step"] for r in read_jsonl(log)] == [0, 1, 2, 3]
    assert read_jsonl(log)[0]["text"] == "multi\nline 東京"
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_bytes(b"{")  # killed after the first byte
    append_jsonl(tiny, {"step": 0})
    assert read_jsonl(tiny) == [{"step": 0}]


# ---------------------------------------------------------------------------- versions


def test_environment_info():
    import platform

    import vqclip

    info = environment_info()
    assert set(info) == {"vqclip", "torch", "open_clip", "kornia", "python"}
    assert info["vqclip"] == vqclip.__version__ and info["torch"] == torch.__version__.split("+")[0]
    assert info["python"] == platform.python_version()
    assert outputs._version("no-such-distribution-vqclip") is None


# ---------------------------------------------------------------------------- state and latents


def test_save_state_keeps_the_previous_one(tmp_path):
    path = tmp_path / "state.pt"
    for step in range(3):
        save_state(path, {"step": step, "z": torch.full((2, 3), float(step))})
    assert load_state(path)["step"] == 2
    assert load_state(tmp_path / "state.prev.pt")["step"] == 1
    assert leftovers(tmp_path, "state.pt", "state.prev.pt") == []


def test_truncated_state_is_a_user_error_and_the_previous_one_is_used(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"step": 1})
    save_state(path, {"step": 2})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"damaged.*state\.prev\.pt"):
        load_state(path)
    assert load_state_or_previous(path) == {"step": 1}
    path.unlink()
    assert load_state_or_previous(path) == {"step": 1}  # killed between the two renames
    (tmp_path / "state.prev.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no state"):
        load_state_or_previous(path)


def test_state_without_a_previous_one(tmp_path):
    with pytest.raises(UserError, match="no state at"):
        load_state_or_previous(tmp_path / "state.pt")
    (tmp_path / "state.pt").write_text("hello")
    with pytest.raises(UserError, match="damaged") as e:
        load_state(tmp_path / "state.pt")
    assert "state.prev.pt" not in str(e.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="not a vqclip state"):
        load_state(tmp_path / "list.pt")


def test_state_loading_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    torch.save({"step": 1, "evil": Evil()}, tmp_path / "state.pt")
    with pytest.raises(UserError):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()


def test_failed_state_write_keeps_both_states(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_state(path, {"step": 1})
    save_state(path, {"step": 2})
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a state")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(RuntimeError, match="killed"):
        save_state(path, {"step": 3})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_state(path) == {"step": 2} and load_state(tmp_path / "state.prev.pt") == {"step": 1}
    assert leftovers(tmp_path, "state.pt", "state.prev.pt") == []


def test_latent_round_trip_saves_only_the_view(tmp_path):
    batch = torch.randn(64, 256, 16, 16)
    save_latent(tmp_path / "z.pt", batch[3:4])
    z = load_latent(tmp_path / "z.pt")
    assert torch.equal(z, batch[3:4])
    assert (tmp_path / "z.pt").stat().st_size < 2 * 256 * 16 * 16 * 4  # not the whole batch
    save_state(tmp_path / "state.pt", {"z": z})
    with pytest.raises(UserError, match="not a vqclip latent"):
        load_latent(tmp_path / "state.pt")
    with pytest.raises(UserError, match="no latent"):
        load_latent(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------- a full disk


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_full_disk_keeps_previous_files_and_leaves_no_temporaries(tmp_path):
    write_json(tmp_path / "result.json", {"version": 1})
    save_png(tmp_path / "image.png", torch.zeros(3, 8, 8), {"version": 1})
    save_state(tmp_path / "state.pt", {"step": 1})
    save_state(tmp_path / "state.pt", {"step": 2})
    save_latent(tmp_path / "z.pt", torch.zeros(3))
    # A child process (not a fork: torch's threads make forks hang) whose writes past 64 KiB fail
    # as on a full disk; SIGXFSZ is ignored so that a write raises OSError (EFBIG) instead.
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        import numpy as np, torch
        from vqclip.outputs import save_latent, save_png, save_state, write_json
        out = Path({str(tmp_path)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
        noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        for attempt in [
            lambda: write_json(out / "result.json", {{"big": "x" * 200_000}}),
            lambda: save_png(out / "image.png", noise, {{"version": 2}}),
            lambda: save_state(out / "state.pt", {{"step": 3, "z": torch.randn(100_000)}}),
            lambda: save_latent(out / "z.pt", torch.randn(100_000)),
        ]:
            try:
                attempt()
            except OSError as e:
                print("failed as expected:", e.errno)
            else:
                raise SystemExit("a write past the size limit succeeded")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr + run.stdout
    assert run.stdout.count("failed as expected") == 4
    assert json.loads((tmp_path / "result.json").read_text()) == {"version": 1}
    assert read_metadata(tmp_path / "image.png") == {"version": 1}
    assert load_state(tmp_path / "state.pt") == {"step": 2}
    assert load_state(tmp_path / "state.prev.pt") == {"step": 1}
    assert torch.equal(load_latent(tmp_path / "z.pt"), torch.zeros(3))
    assert leftovers(tmp_path, "result.json", "image.png", "state.pt", "state.prev.pt", "z.pt") == []
