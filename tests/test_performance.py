"""The fast step: bf16 copies agree with fp32, decoder checkpointing changes nothing, size=auto
stays within its memory budget, and `vqclip bench` reports its figures. No wall-clock asserts."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from vqclip.cli import main
from vqclip.cutouts import make_cutouts
from vqclip.errors import UserError
from vqclip.generation import generate
from vqclip.machine.memory import SAFETY, LiveTensorMemory, auto_size, largest_side, measure_peak_bytes
from vqclip.machine.precision import autocast, resolve_precision
from vqclip.models.vqgan import build_vqgan
from vqclip.prompts import EmbeddingPrompt


def step_loss_and_grad(models, dtype, seed=0):
    """One step's loss and dL/dz on the shipped shapes models, in `dtype`."""
    compute = models.in_precision(dtype)
    member = compute.clip.members[0]
    target = EmbeddingPrompt(member.encode_text(["a red circle on a blue background"])[0])
    tokens = torch.randint(models.vqgan.n_embed, (1, 16, 16), generator=torch.Generator().manual_seed(seed))
    z = models.vqgan.tokens_to_z(tokens).clone().requires_grad_(True)
    with autocast(models.device, dtype):
        image = compute.vqgan.decode(models.vqgan.quantize(z))
        cutouts = make_cutouts(image, member.input_size, 8, noise_fac=0.1,
                               generator=torch.Generator().manual_seed(seed))
        loss = target(member.encode_image(cutouts))
    loss.backward()
    return loss.item(), z.grad


def test_bf16_and_fp32_steps_agree(shapes_models):
    loss32, grad32 = step_loss_and_grad(shapes_models, torch.float32)
    loss16, grad16 = step_loss_and_grad(shapes_models, torch.bfloat16)
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    cosine = torch.nn.functional.cosine_similarity(grad16.flatten(), grad32.flatten(), dim=0)
    assert cosine > 0.95, f"bf16 gradient direction differs from fp32: cosine {cosine:.3f}"
    assert (grad16.norm() / grad32.norm() - 1).abs() < 0.1


def test_the_bf16_copy_leaves_the_fp32_models_and_the_codebook_alone(shapes_models):
    compute = shapes_models.in_precision(torch.bfloat16)
    assert compute is shapes_models.in_precision(torch.bfloat16)  # made once, then reused
    assert next(shapes_models.vqgan.decoder.parameters()).dtype == torch.float32
    assert next(compute.vqgan.decoder.parameters()).dtype == torch.bfloat16
    assert compute.vqgan.codebook.dtype == torch.float32  # quantisation picks the same codes
    assert compute.clip.members[0].mean.dtype == torch.float32
    assert shapes_models.in_precision(torch.float32) is shapes_models


def test_precision_names_fail_loudly():
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UserError, match="valid choices: auto, bf16, fp16, fp32"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("fast", [True, False])
def test_training_takes_bf16_where_precision_finds_it_fast(monkeypatch, fast):
    """The shapes recipes and the prior ask vqclip.machine.precision (no choice of their own): bf16 only where
    fast_bf16 says so (a GPU that emulates bf16 trains in fp32), and never with bf16=False."""
    from vqclip.machine import precision

    monkeypatch.setattr(precision, "fast_bf16", lambda device: fast)
    x = torch.ones(2, 2)
    with precision.training_autocast(torch.device("cpu")):
        assert (x @ x).dtype == (torch.bfloat16 if fast else torch.float32)
    with precision.training_autocast(torch.device("cpu"), enabled=False):
        assert (x @ x).dtype == torch.float32


def test_a_generation_in_bf16_and_in_fp32_both_run(tiny_preset, tmp_path):
    for precision in ("fp32", "bf16"):
        result = generate("a red circle", preset=str(tiny_preset), steps=3, precision=precision,
                          run_dir=str(tmp_path / precision), quiet=True)
        assert result.final_path.is_file()
        assert all(torch.isfinite(torch.tensor(record["loss"])) for record in result.losses)


# --- decoder activation checkpointing -----------------------------------------------------------------


def test_checkpointed_decoder_gives_the_same_image_and_gradient():
    ddconfig = dict(double_z=False, z_channels=8, resolution=32, in_channels=3, out_ch=3, ch=32,
                    ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], dropout=0.0)
    torch.manual_seed(0)
    vqgan = build_vqgan({"kind": "vq", "ddconfig": ddconfig, "n_embed": 16, "embed_dim": 8}).eval().requires_grad_(False)
    z = torch.randn(2, 8, 8, 8)
    results = []
    for checkpoint in (False, True):
        latent = z.clone().requires_grad_(True)
        image = vqgan.decode(latent, checkpoint=checkpoint)
        (image * torch.linspace(0, 1, image.numel()).view_as(image)).sum().backward()
        results.append((image.detach(), latent.grad))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


def test_checkpointing_holds_less_memory_for_the_backward_pass():
    ddconfig = dict(double_z=False, z_channels=8, resolution=64, in_channels=3, out_ch=3, ch=32,
                    ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    vqgan = build_vqgan({"kind": "vq", "ddconfig": ddconfig, "n_embed": 16, "embed_dim": 8}).eval().requires_grad_(False)
    z = torch.randn(1, 8, 32, 32, requires_grad=True)
    peaks = {checkpoint: measure_peak_bytes(lambda on=checkpoint: vqgan.decode(z, checkpoint=on).sum().backward(),
                                            torch.device("cpu")) for checkpoint in (False, True)}
    assert peaks[True] < 0.7 * peaks[False]


# --- memory measurement and size=auto -----------------------------------------------------------------


def test_live_tensor_memory_counts_what_lives_and_forgets_what_is_freed():
    with LiveTensorMemory() as counter:
        kept = torch.zeros(1024, 256)  # 1 MiB
        for _ in range(3):
            temporary = torch.ones(2048, 256)  # 2 MiB, freed on each rebind
            del temporary
    assert counter.peak == 3 * 2**20
    assert counter.current == 2**20 and kept.numel()


class Polynomial:
    """A stand-in memory model: fixed + per_pixel · pixels + per_pixel² · pixels²."""

    def __init__(self, fixed, per_pixel, per_pixel2=0.0):
        self.fixed, self.per_pixel, self.per_pixel2 = fixed, per_pixel, per_pixel2

    def predict(self, width, height):
        pixels = width * height
        return self.fixed + self.per_pixel * pixels + self.per_pixel2 * pixels**2


def test_largest_side_respects_the_budget():
    model = Polynomial(fixed=10e6, per_pixel=1000.0, per_pixel2=1e-3)
    side = largest_side(model, 16, budget=200e6)
    assert side % 16 == 0 and model.predict(side, side) <= SAFETY * 200e6
    assert model.predict(side + 16, side + 16) > SAFETY * 200e6  # and it is the largest such side


def test_largest_side_looks_past_a_size_that_needs_more_than_larger_ones():
    class Checkpointed(Polynomial):  # decoder checkpointing from 512² px: less memory there than below
        def predict(self, width, height):
            return super().predict(width, height) * (0.5 if width * height >= 512 * 512 else 1.0)

    model = Checkpointed(fixed=0.0, per_pixel=100.0)
    budget = model.predict(500, 500) / SAFETY  # fits up to 500 px without checkpointing
    assert largest_side(model, 4, budget) == 704  # ... and up to 704 with it


def test_auto_size_halves_cutn_when_even_the_smallest_size_does_not_fit():
    def model_for_cutn(cutn):  # a step whose fixed part grows with cutn
        return Polynomial(fixed=cutn * 4e6, per_pixel=100.0)

    side, cutn = auto_size(model_for_cutn, 16, budget=40e6, cutn=32)
    assert cutn < 32 and side >= 64 and model_for_cutn(cutn).predict(side, side) <= 40e6
    with pytest.raises(UserError, match="size=auto"):
        auto_size(model_for_cutn, 16, budget=1e6, cutn=4)


@pytest.mark.parametrize("budget_mb", [40, 90])
def test_size_auto_never_picks_a_size_above_the_budget(tmp_path, shapes_models, budget_mb):
    generate("a red circle", preset="shapes", models=shapes_models, size="auto", memory_budget_mb=budget_mb,
             steps=1, init={"mode": "random"},  # the prior writes one fixed grid; random codes fit any size
             run_dir=str(tmp_path / "run"), quiet=True)
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    side, cutn = stored["size"][0], stored["cutn"]  # the concrete size is recorded, for resume
    assert stored["size"] == [side, side] and side % shapes_models.vqgan.factor == 0
    # The step at the chosen size, measured the same way, fits the budget.
    dtype = resolve_precision("auto", shapes_models.device)
    compute = shapes_models.in_precision(dtype)
    member = compute.clip.members[0]
    target = EmbeddingPrompt(member.encode_text(["a red circle"])[0])
    grid = side // shapes_models.vqgan.factor
    z = shapes_models.vqgan.tokens_to_z(torch.zeros(1, grid, grid, dtype=torch.long)).requires_grad_(True)

    def step():
        with autocast(shapes_models.device, dtype):
            image = compute.vqgan.decode(shapes_models.vqgan.quantize(z))
            loss = target(member.encode_image(make_cutouts(image, member.input_size, cutn)))
        loss.backward()

    assert measure_peak_bytes(step, shapes_models.device) <= budget_mb * 2**20


def test_size_auto_and_bad_sizes_on_the_command_line(tmp_path, capsys):
    assert main(["a red circle", "-p", "shapes", "size=[64, -1]"]) == 2
    assert "size must be two positive whole numbers (width height) or auto" in capsys.readouterr().err
    assert main(["a red circle", "-p", "shapes", "size=auto", "memory_budget_mb=-5"]) == 2
    assert "memory_budget_mb must be a positive number" in capsys.readouterr().err


# --- vqclip bench ----------------------------------------------------------------------------------------


def test_bench_reports_both_paths_as_json(capsys):
    code = main(["bench", "--vqgan", "shapes", "--clip", "shapes", "--size", "64", "--cutn", "4",
                 "--steps", "1", "--augmentations", "light", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    for key in ("s_per_step", "baseline_s_per_step", "peak_memory_mb", "baseline_peak_memory_mb",
                "gflop_per_step", "matmul_peak_tflops", "speedup"):
        assert result[key] > 0, key
    assert set(result["stages"]) == {"decode", "cutouts", "augment", "clip", "backward", "optimizer"}
    assert sum(result["stages"].values()) == pytest.approx(result["s_per_step"], rel=0.5)


def test_bench_refuses_bad_settings(capsys):
    assert main(["bench", "--vqgan", "imagenet_f16_1638", "--size", "64"]) == 2
    assert "imagenet_f16_16384" in capsys.readouterr().err  # the closest valid name
    assert main(["bench", "--vqgan", "shapes", "--clip", "shapes", "--size", "66"]) == 2
    assert "factor" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_decoder_gives_the_same_image(tmp_path, shapes_models):
    images = [generate("a red circle", preset="shapes", models=shapes_models, steps=2, seed=3, compile=compiled,
                       run_dir=str(tmp_path / str(compiled)), quiet=True).images for compiled in (False, True)]
    torch.testing.assert_close(images[1], images[0], atol=2e-3, rtol=0)


def test_contiguous_attention_gives_the_same_embeddings_and_gradients():
    import copy

    import open_clip

    from vqclip.machine.precision import _feed_attention_contiguous

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval().requires_grad_(False)
    model.transformer.resblocks = model.transformer.resblocks[:2]  # two layers are enough here
    fixed = copy.deepcopy(model)
    _feed_attention_contiguous(fixed)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) and m.batch_first for m in fixed.modules())
    results = []
    for network in (model, fixed):
        images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1), requires_grad=True)
        embeddings = network(images)
        embeddings.square().sum().backward()
        results.append((embeddings.detach(), images.grad))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-4, rtol=1e-3)
