"""Seamless tiles (tile=true, vqclip/controls/tiling.py): the decoder on a torus, wrapped cutouts, the 3 × 3 preview."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.controls.tiling import circular_padding, random_roll, seam_ratio, tiled
from vqclip.cutouts import make_cutouts
from vqclip.generation import generate
from vqclip.models import dvae
from vqclip.models.vqgan import build_min_dalle_detokenizer, build_vqgan
from vqclip.objective import total_variation
from vqclip.outputs import load_image, read_metadata


class DVAEDecoding(torch.nn.Module):
    """A dVAE decoder (the real architecture, random weights) as the tests below call decoders."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.decoder, self.factor, self.n_embed = dvae.Decoder(n_hid=32, n_blk_per_group=1, vocab_size=512), 8, 512

    def tokens_to_z(self, tokens):
        return torch.nn.functional.one_hot(tokens, self.n_embed).movedim(-1, 1).float()

    def decode(self, z):
        return dvae.unmap_pixels(torch.sigmoid(self.decoder(z)[:, :3]))


def decoders():
    torch.manual_seed(0)
    tiny = build_vqgan({"kind": "vq", "n_embed": 32, "embed_dim": 16, "ddconfig": dict(
        double_z=False, z_channels=16, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
        num_res_blocks=1, attn_resolutions=[16], dropout=0.0)})
    return {"taming (tiny)": tiny, "min-dalle (real architecture)": build_min_dalle_detokenizer(),
            "dVAE": DVAEDecoding()}


@pytest.mark.parametrize("name", ["taming (tiny)", "min-dalle (real architecture)", "dVAE"])
def test_circular_padding_puts_the_decoder_on_a_torus(name):
    """Decoding a rolled latent gives the rolled image: every wrap edge is an inside edge of some
    roll of the tile, so no seam can show. The padding is as before once the block ends."""
    model = decoders()[name].eval()
    grid = 64 // model.factor
    z = model.tokens_to_z(torch.randint(0, model.n_embed, (1, grid, grid), generator=torch.Generator().manual_seed(1)))
    modes = [m.padding_mode for m in model.modules() if hasattr(m, "padding_mode")]
    with torch.no_grad():
        plain = model.decode(z)
        with circular_padding(model):
            tile = model.decode(z)
            rolled = model.decode(z.roll((1, 2), (2, 3)))
        assert torch.equal(model.decode(z), plain)
    assert [m.padding_mode for m in model.modules() if hasattr(m, "padding_mode")] == modes
    torch.testing.assert_close(rolled, tile.roll((model.factor, 2 * model.factor), (2, 3)), atol=2e-5, rtol=0)
    with torch.no_grad():  # zero padding is not periodic
        unequal = (plain.roll((model.factor, 2 * model.factor), (2, 3)) - model.decode(z.roll((1, 2), (2, 3)))).abs()
    assert unequal.max() > 100 * (rolled - tile.roll((model.factor, 2 * model.factor), (2, 3))).abs().max()
    assert seam_ratio(tile, period=model.factor) <= 1.2


def test_the_shapes_vqgan_decodes_random_codes_into_a_seamless_tile(shapes_models):
    """Figures in docs/tiles.md: the step across the wrap edge over the step inside."""
    vqgan = shapes_models.vqgan
    z = vqgan.tokens_to_z(torch.randint(0, vqgan.n_embed, (1, 16, 16), generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        plain = vqgan.decode(z)
        with circular_padding(vqgan):
            tile = vqgan.decode(z)
    assert seam_ratio(tile) == pytest.approx(0.938, abs=0.01)
    assert seam_ratio(plain) == pytest.approx(3.785, abs=0.02)


def test_seam_ratio_and_the_preview():
    image = torch.rand(3, 8, 12, generator=torch.Generator().manual_seed(0))
    ramp = torch.linspace(0, 1, 10).expand(3, 10, 10)
    assert seam_ratio(ramp) == pytest.approx(9.0)  # one jump back of 9 steps
    steps = torch.arange(8.0).div(4, rounding_mode="floor").expand(3, 8, 8)  # 0 0 0 0 1 1 1 1: codes of 4 px
    assert seam_ratio(steps) == pytest.approx(7.0) and seam_ratio(steps, period=4) == pytest.approx(1.0)
    assert tiled(image).shape == (3, 24, 36) and torch.equal(tiled(image)[:, 8:16, 12:24], image)
    # total variation with wrap counts the edges: a periodic ramp costs more than its inside alone
    ramp = torch.linspace(0, 1, 10).expand(1, 3, 10, 10)
    assert total_variation(ramp, wrap=True).item() > total_variation(ramp).item()


def test_wrapped_cutouts_see_across_the_edges():
    """A roll by a random offset from the run's generator: the same seed rolls the same way."""
    image = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[0, 0] = True
    rolled, moved = random_roll(image, torch.Generator().manual_seed(4), region)
    again, _ = random_roll(image, torch.Generator().manual_seed(4))
    assert torch.equal(rolled, again)
    (dy,), (dx,) = (moved.nonzero()[:, 0].tolist(), moved.nonzero()[:, 1].tolist())
    assert (dy, dx) != (0, 0) and torch.equal(rolled, image.roll((dy, dx), (-2, -1)))
    plain = make_cutouts(image / image.max(), 8, 4, noise_fac=0, generator=torch.Generator().manual_seed(4))
    wrapped = make_cutouts(image / image.max(), 8, 4, noise_fac=0, generator=torch.Generator().manual_seed(4), wrap=True)
    assert wrapped.shape == plain.shape and not torch.equal(wrapped, plain)


def test_a_tile_run_end_to_end(tiny_preset, tmp_path, capsys):
    """--tile: the tile, its 3 × 3 preview beside final.png and -o, the seam in the metadata, and
    --from repeats it pixel for pixel."""
    out = tmp_path / "out.png"
    args = ["a red circle", "-p", str(tiny_preset), "--tile", "--steps", "4", "--seed", "2", "--quiet"]
    assert main([*args, "--run-dir", str(tmp_path / "run"), "-o", str(out)]) == 0, capsys.readouterr().err
    final = tmp_path / "run" / "final.png"
    metadata = read_metadata(final)
    assert metadata["config"]["tile"] is True and metadata["seam_ratio"] <= 1.2
    tile = load_image(final)[0]
    for preview in (tmp_path / "run" / "final-3x3.png", tmp_path / "out-3x3.png"):
        assert torch.equal(load_image(preview)[0], tiled(tile))
    expected = torch.tensor([[157, 160, 133], [139, 143, 238]]) / 255
    torch.testing.assert_close(tile[0, 30:32, 29:32], expected, atol=1e-6, rtol=0)
    assert main(["--from", str(final), "--run-dir", str(tmp_path / "again"), "--quiet"]) == 0
    assert torch.equal(load_image(tmp_path / "again" / "final.png")[0], tile)
    with Image.open(tmp_path / "run" / "final-3x3.png") as image:
        assert image.size == (96, 96)


def test_a_tile_run_has_no_seam_where_a_plain_run_has_one(shapes_models, tmp_path):
    """The shapes world from random codes (its prior would start from a flat background, seamless
    either way): the wrap edge of a plain run is a hard line, a tile's is like any inside step."""
    def seam(tile: bool) -> float:
        result = generate("a red circle on a blue background", preset="shapes", models=shapes_models, steps=4, seed=2,
                          size=[64, 64], tile=tile, init={"mode": "random", "weight": 0.0}, quiet=True,
                          run_dir=str(tmp_path / str(tile)))
        return seam_ratio(result.images[0])

    assert seam(True) <= 1.2 and seam(False) > 4


@pytest.mark.parametrize("args,expected", [
    (["--tile", "--init-image", "IMAGE", "--outpaint", "0", "0", "8", "0"], "tile=true makes a picture that wraps"),
    (["tile=maybe"], "tile"),
], ids=["outpaint", "not a bool"])
def test_tile_errors_are_one_line(tiny_preset, tmp_path, capsys, draw_key, args, expected):
    image = str(draw_key(tmp_path / "key.png", "circle", "red", size=32))
    code = main(["a red circle", "-p", str(tiny_preset), *[image if a == "IMAGE" else a for a in args],
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "run").exists()


def test_a_video_refuses_tile(tmp_path, capsys):
    code = main(["video", "animate", "a red circle", "-p", "shapes-zoom", "tile=true", "-o", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "videos are not tiles" in err and err.count("\n") == 1


def test_a_drawing_across_the_edge_is_rolled_whole(shapes_models, draw_key, tmp_path):
    """A start drawn across the wrap edge (the prior's, say) is rolled by whole codes until its edges
    lie on background; one clear of the edges is left where it is."""
    from vqclip.controls.tiling import roll_to_quiet_edges

    vqgan = shapes_models.vqgan

    def latent(x: float) -> torch.Tensor:
        with torch.no_grad():
            return vqgan.encode(load_image(draw_key(tmp_path / f"{x}.png", "square", "red", "blue", x=x, y=0.5)))

    def decoded(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), circular_padding(vqgan):
            return vqgan.decode(vqgan.quantize(z))[0]

    centred, across = latent(0.5), latent(0.02)
    assert torch.equal(roll_to_quiet_edges(centred, vqgan), centred)
    rolled = roll_to_quiet_edges(across, vqgan)
    assert seam_ratio(decoded(across)) > 3 and seam_ratio(decoded(rolled)) < 0.5
    shift = next(k for k in range(-7, 9) if torch.equal(rolled, across.roll(k, -1)))
    assert shift != 0 and abs(shift) <= 4  # a few codes, the nearest quiet boundary


def test_the_shapes_preset_tiles_a_square_the_prior_drew_across_the_edge(shapes_models, tmp_path):
    """Seed 0 draws a big square that touches the edges: a plain run shows a hard seam (ratio 16),
    the tile none (docs/tiles.md has all eight prompts and seeds measured)."""
    def seam(tile: bool) -> float:
        result = generate("a yellow square on a purple background", preset="shapes", models=shapes_models, seed=0,
                          tile=tile, quiet=True, run_dir=str(tmp_path / str(tile)))
        return seam_ratio(result.images[0])

    assert seam(False) > 10 and seam(True) < 0.5
