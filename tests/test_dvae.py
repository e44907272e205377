"""OpenAI's DALL-E dVAE as a decoder: its published files read safely, runs, resume and re-runs.

The published `encoder.pkl`/`decoder.pkl` are `torch.save(model)` of `dall_e` modules. The
fixture writes files in that layout without the package: vqclip's own modules, renamed to the
package's classes while they are pickled, so the file names exactly what a published one names.
The parity test against the `dall_e` package needs it installed (`pip install --no-deps DALL-E`:
its declared dependencies pull in mypy and blobfile, so it is not in the test extra).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from vqclip.cli import main
from vqclip.errors import UserError
from vqclip.generation import generate, resume
from vqclip.models import dvae
from vqclip.models.checkpoint import UnsafeCheckpointError
from vqclip.models.dvae import DVAE, Relaxation, load_dvae

TINY = dict(n_hid=16, n_blk_per_group=1, vocab_size=64)  # 32 px → a 4 × 4 grid of 64 codes


@contextlib.contextmanager
def _as_dall_e_classes(model: torch.nn.Module, part: str, fake_class):
    """While the block runs, `model`'s modules are instances of classes named as the package's."""
    root = f"dall_e.{part}.{part.capitalize()}"
    names = {dvae.Conv2d: "dall_e.utils.Conv2d", type(model): root, dvae.Block: f"{root}Block"}
    with contextlib.ExitStack() as stack:
        fakes = {cls: stack.enter_context(fake_class(name, (cls,))) for cls, name in names.items()}
        originals = [(m, type(m)) for m in model.modules() if type(m) in fakes]
        for m, cls in originals:
            m.__class__ = fakes[cls]
        try:
            yield
        finally:
            for m, cls in originals:
                m.__class__ = cls


def tiny_dvae(seed: int = 0, gain: float = 6.0) -> tuple[dvae.Decoder, dvae.Encoder]:
    torch.manual_seed(seed)
    decoder, encoder = dvae.Decoder(n_init=8, **TINY), dvae.Encoder(**TINY)
    with torch.no_grad():
        decoder.blocks.output.conv.w.mul_(gain)
    return decoder, encoder


def write_published_dvae(folder: Path, fake_class, seed: int = 0, gain: float = 6.0,
                         legacy: bool = False) -> tuple[Path, Path]:
    """decoder.pkl + encoder.pkl of a tiny random dVAE, pickled whole as OpenAI's files are.

    The decoder's output convolution is scaled by `gain`: random weights otherwise decode to an
    almost flat grey, and the tests want pictures whose pixels move. `legacy`: torch's pre-zip
    format (torch.save before 1.6), in case the published files are older than they look.
    """
    decoder, encoder = tiny_dvae(seed, gain)
    folder.mkdir(parents=True, exist_ok=True)
    for model, part in ((decoder, "decoder"), (encoder, "encoder")):
        with _as_dall_e_classes(model, part, fake_class):
            torch.save(model, folder / f"{part}.pkl", _use_new_zipfile_serialization=not legacy)
    return folder / "decoder.pkl", folder / "encoder.pkl"


@pytest.fixture(scope="module")
def dvae_files(tmp_path_factory, fake_class) -> tuple[Path, Path]:
    return write_published_dvae(tmp_path_factory.mktemp("dvae"), fake_class)


@pytest.fixture(scope="module")
def dvae_preset(make_tiny_preset, dvae_files):
    decoder, encoder = dvae_files
    return make_tiny_preset(vqgan={"format": "dvae", "checkpoint": str(decoder), "encoder": str(encoder)},
                            steps=6, checkpoint_every=3, save_every=0, lr=2.0, seed=5)


# -- the files ----------------------------------------------------------------------------------------
def test_published_layout_names_only_the_packages_classes(dvae_files):
    decoder, encoder = dvae_files
    for path, root in ((decoder, "dall_e.decoder.Decoder"), (encoder, "dall_e.encoder.Encoder")):
        named = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        assert {root, f"{root}Block", "dall_e.utils.Conv2d", "torch.nn.modules.container.Sequential"} <= named
        assert named <= set(dvae.DVAE_CLASSES)


def test_loads_into_vqclips_modules_with_the_same_weights(dvae_files):
    decoder, encoder = dvae_files
    model = load_dvae(decoder, encoder)
    original = tiny_dvae()[0]  # what the fixture pickled
    assert model.factor == 8 and model.n_embed == model.embed_dim == 64
    for name, value in original.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[name], value), name
    tokens = torch.randint(64, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    codes = model.quantize(model.tokens_to_z(tokens))
    expected = ((torch.sigmoid(original(codes)[:, :3]) - 0.1) / 0.8).clamp(0, 1)
    torch.testing.assert_close(model.decode(codes), expected, rtol=0, atol=0)
    assert model.decode(codes).std() > 0.05  # the gain gives pictures, not a flat grey
    assert torch.equal(model.z_to_tokens(model.tokens_to_z(tokens)), tokens)


def test_parity_with_the_dall_e_package(tmp_path):
    dall_e = pytest.importorskip("dall_e", reason="the dall_e package: pip install --no-deps DALL-E")
    torch.manual_seed(3)
    reference = {"decoder": dall_e.Decoder(n_init=8, n_hid=64, n_blk_per_group=1, vocab_size=512),
                 "encoder": dall_e.Encoder(n_hid=64, n_blk_per_group=1, vocab_size=512)}
    with torch.no_grad():
        for p in reference["decoder"].parameters():
            p.normal_(std=0.05)  # biases too: the package starts them at zero
    for part, module in reference.items():
        torch.save(module, tmp_path / f"{part}.pkl")
    model = load_dvae(tmp_path / "decoder.pkl", tmp_path / "encoder.pkl")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = reference["encoder"](dall_e.map_pixels(images))
        torch.testing.assert_close(model.encode(images), logits)
        for codes in (model.quantize(logits), (logits / 2).softmax(1)):  # one-hot and soft
            expected = dall_e.unmap_pixels(torch.sigmoid(reference["decoder"](codes)[:, :3].float()))
            torch.testing.assert_close(model.decode(codes), expected)


def test_a_file_naming_another_callable_is_refused_and_runs_nothing(tmp_path, dvae_files):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    evil = tmp_path / "decoder.pkl"
    torch.save({"blocks": Payload()}, evil)
    with pytest.raises(UnsafeCheckpointError, match="names (posix|nt).system.*nothing in it was executed"):
        load_dvae(evil)
    assert not marker.exists()
    module = torch.nn.Linear(2, 2)  # a harmless class, but not one a dVAE file holds
    torch.save(module, tmp_path / "linear.pkl")
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_dvae(tmp_path / "linear.pkl")
    with pytest.raises(UserError, match="holds dall_e.encoder.Encoder, not the dVAE's decoder"):
        load_dvae(dvae_files[1])


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_the_legacy_format_reads_the_same_and_refuses_the_same(tmp_path, dvae_files, fake_class):
    decoder, encoder = write_published_dvae(tmp_path, fake_class, legacy=True)
    assert decoder.read_bytes()[:2] == b"\x80\x02"  # a bare pickle, not a zip archive
    legacy, current = load_dvae(decoder, encoder), load_dvae(*dvae_files)
    for name, value in current.state_dict().items():
        assert torch.equal(legacy.state_dict()[name], value), name
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    torch.save({"blocks": Payload()}, tmp_path / "evil.pkl", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="names (posix|nt).system.*nothing in it was executed"):
        load_dvae(tmp_path / "evil.pkl")
    assert not marker.exists()
    for cut in (decoder.read_bytes()[:3000], decoder.read_bytes()[:-3000]):
        (tmp_path / "cut.pkl").write_bytes(cut)
        with pytest.raises(UserError, match="cannot read checkpoint .*is the file complete"):
            load_dvae(tmp_path / "cut.pkl")


def test_truncated_and_swapped_files_are_one_line_errors(tmp_path, dvae_preset, dvae_files, capsys):
    truncated = tmp_path / "decoder.pkl"
    truncated.write_bytes(dvae_files[0].read_bytes()[:5000])
    run_dir = tmp_path / "run"
    code = main(["x", "-p", str(dvae_preset), "--run-dir", str(run_dir), f"vqgan.checkpoint={truncated}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "cannot read checkpoint" in error and "complete" in error
    assert not run_dir.exists()
    code = main(["x", "-p", str(dvae_preset), "--run-dir", str(run_dir), f"vqgan.encoder={dvae_files[0]}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "holds dall_e.decoder.Decoder, not the dVAE's encoder" in error
    assert not run_dir.exists()


# -- the relaxation -----------------------------------------------------------------------------------
def test_relaxations(dvae_files):
    model = load_dvae(dvae_files[0])
    z = torch.randn(1, 64, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    schedule = Relaxation("softmax", 1.0, 0.1, steps=11)
    assert [round(schedule.temperature_at(s), 4) for s in (0, 5, 10, 50)] == [1.0, 0.3162, 0.1, 0.1]
    torch.testing.assert_close(model.relax(z, 10, schedule), (z / 0.1).softmax(1))
    gumbel = Relaxation("gumbel", 1.0, 0.1, steps=11, seed=7)
    sample = model.relax(z, 3, gumbel)
    assert torch.equal(sample, model.relax(z, 3, gumbel))  # seeded by (seed, step): resumable
    assert not torch.equal(sample, model.relax(z, 4, gumbel))
    assert model.relax(z, 3, Relaxation("gumbel", seed=2**63 - 1)).shape == z.shape  # the largest seed a run takes
    assert torch.equal(sample.sum(1), torch.ones(1, 4, 4)) and set(sample.unique().tolist()) == {0.0, 1.0}
    z.requires_grad_(True)
    model.relax(z, 3, gumbel)[:, 5].sum().backward()
    assert z.grad.abs().sum() > 0  # straight-through: the soft sample's gradient
    hard = model.quantize(z)
    assert torch.equal(hard.argmax(1), z.argmax(1)) and torch.equal(hard.sum(1), torch.ones(1, 4, 4))


def test_checkpointed_decoding_gives_the_same_image_and_gradient(dvae_files):
    model = load_dvae(dvae_files[0])
    z = torch.randn(1, 64, 4, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    results = []
    for checkpoint in (False, True):
        image = model.decode(model.relax(z, 0, Relaxation()), checkpoint=checkpoint)
        (gradient,) = torch.autograd.grad(image.square().sum(), z)
        results.append((image.detach(), gradient))
    torch.testing.assert_close(results[0], results[1])
    assert results[0][1].abs().sum() > 0


def test_without_encoder_image_init_is_a_user_error(dvae_files):
    with pytest.raises(UserError, match="vqgan.encoder=encoder.pkl"):
        load_dvae(dvae_files[0]).encode(torch.rand(1, 3, 32, 32))


# -- runs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["softmax", "gumbel"])
def test_generates_resumes_and_reruns_from_its_png(dvae_preset, dvae_files, tmp_path, kind, starting_z):
    settings = dict(preset=str(dvae_preset), relaxation={"kind": kind})
    whole = generate("a red circle", run_dir=str(tmp_path / "whole"), **settings)
    assert whole.steps_done == 6 and whole.images.shape == (1, 3, 32, 32)
    model = load_dvae(*dvae_files)
    moved = model.z_to_tokens(whole.z) != model.z_to_tokens(starting_z[0])
    assert moved.any()  # the optimisation changed codes
    final = Image.open(tmp_path / "whole" / "final.png").tobytes()

    # Stopped after step 3 of 6 (the temperature schedule spans the 6), then resumed.
    generate("a red circle", run_dir=str(tmp_path / "part"), callback=lambda info: info.step < 3, **settings)
    resumed = resume(tmp_path / "part")
    assert resumed.steps_done == 6
    assert Image.open(tmp_path / "part" / "final.png").tobytes() == final

    assert main(["--from", str(tmp_path / "whole" / "final.png"), "--run-dir", str(tmp_path / "again")]) == 0
    assert Image.open(tmp_path / "again" / "final.png").tobytes() == final
    config = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert config["vqgan"]["format"] == "dvae" and config["relaxation"]["kind"] == kind


def test_pinned_pixels_of_a_seeded_run(dvae_preset, tmp_path):
    result = generate("a red circle", preset=str(dvae_preset), run_dir=str(tmp_path / "run"))
    expected = torch.tensor([[0.2776, 0.2785, 0.2784, 0.2789], [0.2180, 0.2175, 0.2175, 0.2172],
                             [0.7080, 0.7084, 0.7083, 0.7087]])
    torch.testing.assert_close(result.images[0, :, 0, :4], expected, atol=2e-3, rtol=0)


def test_image_init_starts_from_the_encoders_logits(dvae_preset, dvae_files, tmp_path, starting_z):
    picture = torch.zeros(3, 32, 32)
    picture[0, 8:24, 8:24] = 1
    Image.fromarray((picture.permute(1, 2, 0) * 255).byte().numpy()).save(tmp_path / "init.png")
    generate("x", preset=str(dvae_preset), steps=1, run_dir=str(tmp_path / "run"),
             init={"mode": "image", "image": str(tmp_path / "init.png")})
    model = load_dvae(*dvae_files)
    torch.testing.assert_close(starting_z[0], model.encode(picture[None]))


def test_config_errors(dvae_preset, capsys):
    assert main(["x", "-p", str(dvae_preset), "relaxation.kind=hard"]) == 2
    assert "gumbel, softmax" in capsys.readouterr().err
    assert main(["x", "-p", str(dvae_preset), "relaxation.temperature=0"]) == 2
    assert "relaxation.temperature must be a positive" in capsys.readouterr().err
    assert main(["x", "-p", "shapes", "vqgan.encoder=encoder.pkl"]) == 2
    assert "vqgan.encoder is for vqgan.format=dvae" in capsys.readouterr().err


def test_registry_entry_and_cached_files(tmp_path, monkeypatch, dvae_files, dvae_preset, capsys):
    import shutil

    from vqclip.models import registry

    entry = registry.get_vqgan("dalle_dvae")
    assert entry.format == "dvae"
    assert entry.checkpoint.url == "https://cdn.openai.com/dall-e/decoder.pkl"
    assert entry.encoder.url == "https://cdn.openai.com/dall-e/encoder.pkl"
    assert main(["models", "list"]) == 0
    assert "dalle_dvae" in capsys.readouterr().out
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path))  # both files already there: no request is made
    (tmp_path / "dalle_dvae").mkdir()
    for path in dvae_files:
        shutil.copy(path, tmp_path / "dalle_dvae" / path.name)
    model = registry.load_vqgan_from_config({"name": "dalle_dvae"}, progress=False)
    assert model.kind == "dvae" and model.encoder is not None
    (tmp_path / "dalle_dvae" / "decoder.pkl").write_text("<html>Not found</html>")  # a dead mirror's answer
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        registry.load_vqgan_from_config({"name": "dalle_dvae"}, progress=False)
    assert main(["models", "check", "-p", str(dvae_preset)]) == 0
    assert "VQGAN: dvae, 64 codes × 64, factor 8, decodes 2×2 tokens to (16, 16)" in capsys.readouterr().out


def test_a_given_encoder_is_used_beside_a_named_decoder(tmp_path, monkeypatch, dvae_files, fake_class):
    import shutil

    from vqclip.models import registry

    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))  # the registry's two files, seed 0
    (tmp_path / "cache" / "dalle_dvae").mkdir(parents=True)
    for path in dvae_files:
        shutil.copy(path, tmp_path / "cache" / "dalle_dvae" / path.name)
    _, own_encoder = write_published_dvae(tmp_path / "own", fake_class, seed=1)
    model = registry.load_vqgan_from_config({"name": "dalle_dvae", "format": "dvae", "encoder": str(own_encoder)},
                                            progress=False)
    expected = tiny_dvae(seed=1)[1].state_dict()
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in expected.items())
    assert not torch.equal(tiny_dvae(seed=0)[1].state_dict()["blocks.input.w"], expected["blocks.input.w"])


def test_adapter_interface_matches_the_vqgans():
    from vqclip.models.vqgan import VQGAN

    shared = {"encode", "decode", "quantize", "relax", "tokens_to_z", "z_to_tokens", "z_min", "z_max"}
    assert shared <= set(dir(DVAE)) and shared <= set(dir(VQGAN))


def test_videos_animate_and_morph(dvae_preset, dvae_files, tmp_path, draw_key):
    from vqclip import video
    from vqclip.outputs import load_image
    from vqclip.video.run_state import decode_latent, encode_image

    settings = dict(preset=str(dvae_preset), steps=2, quiet=True)
    animated = video.animate("a red circle", output=str(tmp_path / "zoom.gif"), run_dir=str(tmp_path / "a"),
                             video={"frames": 3, "first_frame_steps": 2, "steps_per_frame": 1, "zoom": 1.2},
                             **settings)
    assert len(animated.frames) == 3 and animated.frames[0].shape == (3, 32, 32)
    assert (animated.frames[2] - animated.frames[0]).abs().mean() > 0.01  # zoomed, re-encoded, moved on
    keys = [draw_key(tmp_path / "red.png", "circle", "red", size=32),
            draw_key(tmp_path / "blue.png", "square", "blue", size=32)]
    morph = video.interpolate([str(k) for k in keys], output=str(tmp_path / "morph.gif"), run_dir=str(tmp_path / "m"),
                              video={"between": 3, "method": "lerp"}, **settings)
    model = load_dvae(*dvae_files)
    ends = [decode_latent(model, encode_image(model, load_image(k)[0], torch.device("cpu"))) for k in keys]
    assert len(morph.frames) == 5
    torch.testing.assert_close(morph.frames[0], ends[0], atol=1 / 255, rtol=0)
    torch.testing.assert_close(morph.frames[-1], ends[1], atol=1 / 255, rtol=0)
    middle = morph.frames[2]
    assert (middle - ends[0]).abs().mean() > 0.005 and (middle - ends[1]).abs().mean() > 0.005


def test_a_batch_of_two_relaxations(dvae_preset, tmp_path):
    batch = tmp_path / "jobs.yaml"
    batch.write_text(yaml.safe_dump({"defaults": {"preset": str(dvae_preset), "steps": 2},
                                     "grid": {"prompt": ["a red circle"], "relaxation.kind": ["softmax", "gumbel"]}}))
    assert main(["batch", str(batch), "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    finals = sorted((tmp_path / "out").glob("*/final.png"))
    assert len(finals) == 2
    kinds = {yaml.safe_load((final.parent / "config.yaml").read_text())["relaxation"]["kind"] for final in finals}
    assert kinds == {"softmax", "gumbel"}


def test_the_published_architecture_with_random_weights():
    """The published files' sizes: 43.8 M decoder and 53.8 M encoder parameters, f8, 8192 codes."""
    torch.manual_seed(0)
    model = DVAE(dvae.Decoder(), dvae.Encoder()).eval()
    assert sum(p.numel() for p in model.decoder.parameters()) == 43_829_766  # as the package's Decoder()
    assert sum(p.numel() for p in model.encoder.parameters()) == 53_786_240
    with torch.no_grad():
        z = model.encode(torch.rand(1, 3, 64, 64))
        image = model.decode(model.quantize(z))
    assert z.shape == (1, 8192, 8, 8) and image.shape == (1, 3, 64, 64)
    assert 0 <= image.min() and image.max() <= 1
