"""Canvases larger than memory (window=[w, h], vqclip/controls/canvas.py): a window decodes as the
whole picture does there, a windowed run is repeatable and resumable, and bad settings are one line."""

from __future__ import annotations

import numpy
import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.controls import canvas
from vqclip.controls.canvas import decode_window, norm_statistics, tail_reach, window_box
from vqclip.errors import UserError
from vqclip.generation import generate, resume
from vqclip.models import registry
from vqclip.models.vqgan import build_min_dalle_detokenizer, build_vqgan, vqgan_spec_from_model_config
from vqclip.outputs import read_metadata


def decoders():
    torch.manual_seed(0)
    return {"shapes": build_vqgan(vqgan_spec_from_model_config(registry.VQGANS["shapes"].model)),
            "imagenet_f16_16384": build_vqgan(vqgan_spec_from_model_config(registry.VQGANS["imagenet_f16_16384"].model)),
            "min-dalle": build_min_dalle_detokenizer()}


@pytest.mark.parametrize("name,grid", [("shapes", 24), ("imagenet_f16_16384", 12), ("min-dalle", 12)])
def test_a_window_is_the_whole_decode_there(name, grid):
    """With the whole picture's GroupNorm statistics and the tail's reach of context, a window's
    pixels are the whole decode's, at the canvas's corners, edges and middle; with half the context
    they are not (the reach is needed, not generous)."""
    vqgan = decoders()[name].eval().requires_grad_(False)
    z = vqgan.tokens_to_z(torch.randint(0, vqgan.n_embed, (1, grid, grid), generator=torch.Generator().manual_seed(2)))
    f, side = vqgan.factor, grid // 2
    with torch.no_grad():
        whole = vqgan.decode(z)
        picture, statistics = norm_statistics(vqgan, z)
        torch.testing.assert_close(picture, whole, atol=1e-6, rtol=0)
        for top, left in [(0, 0), (0, grid - side), (grid // 4, grid // 4 + 1), (grid - side, grid - side)]:
            window = decode_window(vqgan, z, (top, left, side, side), statistics)
            expected = whole[..., top * f:(top + side) * f, left * f:(left + side) * f]
            torch.testing.assert_close(window, expected, atol=5e-4, rtol=0)
    assert tail_reach(vqgan) == {"shapes": 4, "imagenet_f16_16384": 7, "min-dalle": 7}[name]
    reaches = canvas._reaches
    canvas._reaches = lambda model: [reach / 2 for reach in reaches(model)]
    try:
        with torch.no_grad():
            box = (grid // 4, grid // 4, side, side)
            short = decode_window(vqgan, z, box, statistics)
    finally:
        canvas._reaches = reaches
    top, left = box[:2]
    assert (short - whole[..., top * f:(top + side) * f, left * f:(left + side) * f]).abs().max() > 1e-3


def test_windows_reach_the_edges_as_often_as_the_middle():
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(32, 32)
    for _ in range(2000):
        top, left, height, width = window_box((32, 32), (16, 16), generator)
        assert 0 <= top <= 16 and 0 <= left <= 16 and (height, width) == (16, 16)
        counts[top:top + height, left:left + width] += 1
    # drawn a window past the edges and clamped: at least half as often on each side's edge (a
    # quarter in the corners), where offsets drawn inside only would give a corner 1/17² of the middle
    assert counts.min() / counts.max() > 0.2 and counts[0, 0] / counts[16, 16] > 0.2


def shapes_run(tmp_path, name: str, **overrides) -> dict:
    settings = dict(size=[128, 128], window=[64, 64], window_refresh=2, steps=6, cutn=4, seed=5,
                    init={"mode": "random", "weight": 0.0}, checkpoint_every=1, save_every=3, quiet=True,
                    run_dir=str(tmp_path / name), **overrides)
    return settings


def test_a_windowed_run_is_a_whole_canvas_repeated_by_from_and_resumed_exactly(tmp_path):
    result = generate("a red circle on a blue background", preset="shapes", **shapes_run(tmp_path, "whole"))
    final = Image.open(tmp_path / "whole" / "final.png")
    assert final.size == (128, 128) and result.images.shape == (1, 3, 128, 128)
    assert Image.open(tmp_path / "whole" / "progress" / "00003.png").size == (128, 128)  # whole, not a window
    assert read_metadata(tmp_path / "whole" / "final.png")["config"]["window"] == [64, 64]
    assert numpy.asarray(final)[100, 60:64].tolist() == PINNED

    steps = []
    generate("a red circle on a blue background", preset="shapes", callback=lambda info: steps.append(info.step) or
             (info.step < 3), **shapes_run(tmp_path, "stopped"))  # stops after step 3, between two renewals
    assert steps == [1, 2, 3]
    resume(tmp_path / "stopped")
    assert Image.open(tmp_path / "stopped" / "final.png").tobytes() == final.tobytes()

    assert main(["--from", str(tmp_path / "whole" / "final.png"), "--run-dir", str(tmp_path / "again"), "quiet=true"]) == 0
    assert Image.open(tmp_path / "again" / "final.png").tobytes() == final.tobytes()


PINNED = [[208, 29, 48], [221, 54, 39], [236, 95, 28], [243, 125, 24]]  # a seeded run's pixels


@pytest.mark.parametrize("args,message", [
    (["window=[62,64]"], "multiples of the VQGAN's factor 4"),
    (["window=[256,64]"], "window 256×64 is larger than the canvas 128×128"),
    (["window=[64]"], "window must be two positive whole numbers"),
    (["window=64"], "window in command line takes a list: put its values in brackets, window=[first, second, ...]"),
    (["window=[64,64]", "--tile"], "window= judges one part of the canvas at a time, and tile=true"),
    (["window=[64,64]", "--symmetry", "both"], "and symmetry needs the whole picture"),
    (["window=[64,64]", "window_refresh=0"], "window_refresh must be at least 1"),
    (["window=[64,64]", "hold.image=docs/tiles.png", "hold.weight=1"], "and hold.image needs the whole picture"),
    (["window=[64,64]", "init.mode=prior"], "start it with init.mode=random or an --init-image"),
    (["window=[64,64]", "vqgan.name=dalle_dvae"], "DALL-E's dVAE decodes whole pictures only"),
])
def test_bad_windows_are_one_line(args, message, tmp_path, capsys):
    code = main(["a red circle", "-p", "shapes", "size=[128,128]", "init.mode=random", "steps=1",
                 f"outputs_root={tmp_path}", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_the_dvae_cannot_decode_windows():
    from vqclip.models.dvae import DVAE, Decoder

    with pytest.raises(UserError, match="DALL-E's dVAE decodes whole pictures only"):
        tail_reach(DVAE(Decoder(n_hid=32, n_blk_per_group=1, vocab_size=64)))


def test_the_bench_prints_the_peaks_and_the_windows_difference(capsys):
    assert main(["bench", "--vqgan", "shapes", "--clip", "shapes", "--size", "128", "--window", "64",
                 "--cutn", "4", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["window_difference"] < 1e-4
    assert 0 < report["refresh_mb"] < report["whole_mb"] and report["window_mb"] > 0
    assert report["ratio"] == max(report["window_mb"], report["refresh_mb"]) / report["whole_mb"]
    for window in ("0", "-4", "66"):
        assert main(["bench", "--vqgan", "shapes", "--clip", "shapes", "--size", "128", "--window", window]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "must be smaller than --size 128" in err, err


def test_fused_attention_gives_taming_sums_without_the_matrix():
    """A large canvas's encoder and trunk attend without the (hw × hw) matrix: the same pictures,
    a fraction of the memory; the blocks are as before afterwards, even for a model given twice."""
    from vqclip.controls.canvas import fused_attention
    from vqclip.machine.memory import measure_peak_bytes

    vqgan = decoders()["shapes"].eval().requires_grad_(False)
    picture = torch.rand(1, 3, 96, 192, generator=torch.Generator().manual_seed(0))

    def encode():
        with torch.no_grad():
            return vqgan.encode(picture)

    plain, plain_peak = encode(), measure_peak_bytes(encode, torch.device("cpu"))
    with torch.no_grad():
        decoded = vqgan.decode(plain)
    with fused_attention(vqgan, vqgan):
        fused, fused_peak = encode(), measure_peak_bytes(encode, torch.device("cpu"))
        with torch.no_grad():
            torch.testing.assert_close(vqgan.decode(plain), decoded, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=0)
    assert plain_peak - fused_peak >= (24 * 48) ** 2 * 4, (fused_peak, plain_peak)  # at least one (hw)² matrix
    assert all("forward" not in module.__dict__ for module in vqgan.modules())


def test_a_windowed_run_of_the_real_architectures(tmp_path):
    """vqgan_imagenet_f16_16384 and ViT-B/32 (random weights, in the files users have): one step on
    a 128 px canvas through a 64 px window, the whole canvas written."""
    from vqclip.bench.concurrent import write_random_real_vqgan

    config, checkpoint = write_random_real_vqgan(tmp_path)
    code = main(["a lighthouse", "--seed", "1", "--steps", "1", "--size", "128", "128", "window=[64,64]",
                 "--run-dir", str(tmp_path / "run"), "init.mode=random", f"vqgan.config={config}",
                 f"vqgan.checkpoint={checkpoint}", "clip.models=[{name: ViT-B-32}]", "cutn=4", "quiet=true"])
    assert code == 0
    assert Image.open(tmp_path / "run" / "final.png").size == (128, 128)
