"""Training under torchrun (vqclip/distributed.py): 2 CPU processes on the gloo backend end with the
weights of one process with the same global batch, and resume a run. The comparisons run the command
users run (`torchrun --nproc-per-node 2 -m vqclip train ...`) against `vqclip train ...`.

The tolerance: every weight within the sum of the learning rates over the run, and nine in ten
weights within 1e-6. Sums over shares are taken in another order than over the whole batch,
so gradients differ by rounding; where a gradient is zero in exact arithmetic (a convolution's bias
just before a GroupNorm, an attention key's bias) Adam normalises that rounding noise to a step of
about ±lr, in either direction (measured: at most 1.0e-4 for the VQGAN, 4.7e-5 for the CLIP, against
sums of 4.2e-4 and 2.1e-4; the prior agrees to 1e-8)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import kill_at_call, shapes_folder  # noqa: F401 (a fixture)

from vqclip.cli import main
from vqclip.errors import UserError
from vqclip.machine.precision import training_autocast
from vqclip.train import distributed
from vqclip.train import vqgan as vqgan_recipe

ROOT = Path(__file__).resolve().parents[1]
VQGAN = ["steps=6", "batch_size=4", "n_embed=32", "embed_dim=8", "z_channels=8", "ch=32", "disc_start=2",
         "disc_layers=1", "disc_ch=8", "restart_every=3", "sample_every=3", "checkpoint_every=2", "held_out=4",
         "bf16=false"]
CLIP = ["steps=6", "batch_size=8", "width=8", "embed_dim=16", "text_width=32", "text_layers=1", "context_length=8",
        "eval_every=3", "checkpoint_every=2", "held_out=6", "bf16=false"]
PRIOR = ["--steps", "6", "width=32", "heads=2", "glu=64", "encoder_layers=1", "decoder_layers=1", "eval_items=4",
         "batch_size=4", "eval_every=3", "checkpoint_every=2", "bf16=false"]


def torchrun(*args: str, script: list[str] | None = None) -> str:
    """`torchrun --standalone --nproc-per-node 2 -m vqclip ARGS --quiet` (or SCRIPT ARGS), one thread each
    (2 cores are shared); what it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *(script or ["-m", "vqclip", *args, "--quiet"])], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 1  # rank 0 alone prints the summary
    return done.stdout


def one_process(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


def state(folder: Path) -> dict:
    return torch.load(folder / "train_state.pt", weights_only=True)


def learning_rates(lr: float, warmup: int, steps: int) -> float:
    return sum(lr * vqgan_recipe.warmup_cosine(warmup, steps)(step) for step in range(steps))


def assert_same_training(one: dict, two: dict, part: str, tolerance: float) -> None:
    differences = {name: (one[part][name].float() - two[part][name].float()).abs()
                   for name in one[part] if one[part][name].is_floating_point()}
    worst = max(differences, key=lambda name: differences[name].max())
    assert differences[worst].max() < tolerance, (part, worst, differences[worst].max())
    every = torch.cat([d.flatten() for d in differences.values()])
    assert (every < 1e-6).float().mean() >= 0.9, (part, (every < 1e-6).float().mean())
    assert one["step"] == two["step"]


def test_vqgan_and_its_discriminator_on_two_processes_match_one(shapes_folder, tmp_path):  # noqa: F811
    one_process("train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "one"), *VQGAN)
    torchrun("train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "two"), *VQGAN)
    one, two = state(tmp_path / "one"), state(tmp_path / "two")
    tolerance = learning_rates(1e-3, 50, 6)
    assert_same_training(one, two, "model", tolerance)
    assert_same_training(one, two, "discriminator", tolerance)  # batch norm over the global batch
    assert torch.equal(one["usage"], two["usage"])  # codebook use summed over the ranks: the same restarts
    # the figures rank 0 measured and wrote: the same losses (averaged over the ranks), PSNR and codes
    assert one["history"] == two["history"] and [h["step"] for h in two["history"]] == [3, 6]
    assert sorted(p.name for p in (tmp_path / "two" / "samples").iterdir()) == ["step-000003.png", "step-000006.png"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_clip_on_two_processes_matches_one(shapes_folder, tmp_path):  # noqa: F811
    one_process("train", "clip", str(shapes_folder), "--out", str(tmp_path / "one"), *CLIP)
    torchrun("train", "clip", str(shapes_folder), "--out", str(tmp_path / "two"), *CLIP)
    one, two = state(tmp_path / "one"), state(tmp_path / "two")
    assert_same_training(one, two, "model", learning_rates(1e-3, 100, 6))  # the logits over the whole batch
    assert [h["loss"] for h in one["history"]] == [h["loss"] for h in two["history"]]


@pytest.mark.slow
def test_prior_on_two_processes_matches_one(shapes_folder, tmp_path):  # noqa: F811
    vqgan_recipe.train(shapes_folder, tmp_path / "vqgan", vqgan_recipe.VQGANTrainConfig(
        steps=2, batch_size=4, n_embed=32, embed_dim=8, z_channels=8, ch=32, held_out=4, bf16=False), progress=False)
    for name, run in (("one", one_process), ("two", torchrun)):
        run("train", "prior", str(shapes_folder), "--vqgan", str(tmp_path / "vqgan"), "--out", str(tmp_path / name),
            *PRIOR)
    one, two = state(tmp_path / "one"), state(tmp_path / "two")
    assert_same_training(one, two, "model", 1e-6)  # no zero gradients here: close to rounding
    assert one["history"] == two["history"]


def test_a_run_resumes_on_two_processes(shapes_folder, tmp_path, monkeypatch):  # noqa: F811
    """Killed after its checkpoint at step 2, continued by torchrun: the uninterrupted run's weights."""
    one_process("train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "whole"), *VQGAN)
    restore = kill_at_call(monkeypatch, vqgan_recipe, "train_step", 4)
    assert main(["train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "resumed"), *VQGAN, "--quiet"]) == 130
    restore()
    assert state(tmp_path / "resumed")["step"] == 2
    torchrun("train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "resumed"), "--resume")
    whole, resumed = state(tmp_path / "whole"), state(tmp_path / "resumed")
    assert_same_training(whole, resumed, "model", learning_rates(1e-3, 50, 6))
    assert whole["history"] == resumed["history"]


@pytest.mark.slow
def test_a_checkpoint_written_under_torchrun_resumes_under_torchrun(shapes_folder, tmp_path):  # noqa: F811
    """The prior (whose --resume may raise steps): 4 steps, then resumed to 6, by one process and by two."""
    vqgan_recipe.train(shapes_folder, tmp_path / "vqgan", vqgan_recipe.VQGANTrainConfig(
        steps=2, batch_size=4, n_embed=32, embed_dim=8, z_channels=8, ch=32, held_out=4, bf16=False), progress=False)
    common = ["train", "prior", str(shapes_folder), "--vqgan", str(tmp_path / "vqgan")]
    for name, run in (("one", one_process), ("two", torchrun)):
        run(*common, "--out", str(tmp_path / name), *PRIOR[2:], "--steps", "4")
        assert state(tmp_path / name)["step"] == 4
        run(*common, "--out", str(tmp_path / name), "--steps", "6", "--resume")
    one, two = state(tmp_path / "one"), state(tmp_path / "two")
    assert two["step"] == 6 and [h["step"] for h in two["history"]] == [3, 4, 6]
    assert_same_training(one, two, "model", 1e-6)
    assert one["history"] == two["history"]


@pytest.mark.slow
def test_train_all_on_two_processes_matches_one(shapes_folder, tmp_path):  # noqa: F811
    settings = ["--steps", "4", "vqgan.n_embed=32", "vqgan.embed_dim=8", "vqgan.z_channels=8", "vqgan.ch=32",
                "vqgan.batch_size=4", "vqgan.disc_start=1", "vqgan.disc_ch=8", "vqgan.held_out=4", "vqgan.bf16=false",
                "clip.batch_size=8", "clip.width=8", "clip.embed_dim=16", "clip.held_out=4", "clip.bf16=false",
                "prior.width=32", "prior.heads=2", "prior.glu=64", "prior.eval_items=4", "prior.batch_size=4",
                "prior.bf16=false", "steps=2"]
    one_process("train", "all", str(shapes_folder), "--out", str(tmp_path / "one"), *settings)
    torchrun("train", "all", str(shapes_folder), "--out", str(tmp_path / "two"), *settings)
    for recipe, lr, warmup in (("vqgan", 1e-3, 50), ("clip", 1e-3, 100), ("prior", 1e-3, 100)):
        one, two = state(tmp_path / "one" / recipe), state(tmp_path / "two" / recipe)
        assert_same_training(one, two, "model", learning_rates(lr, warmup, 4))
    preset = (tmp_path / "two" / "preset.yaml").read_text()
    assert preset == (tmp_path / "one" / "preset.yaml").read_text().replace(str(tmp_path / "one"), str(tmp_path / "two"))


@pytest.mark.slow
def test_a_python_script_trains_under_torchrun(shapes_folder, tmp_path):  # noqa: F811
    script = tmp_path / "train_clip.py"
    script.write_text(f"""
import json, sys
from vqclip.train import distributed
from vqclip.train import clip

config = clip.ClipTrainConfig({", ".join(CLIP).replace("false", "False")})
with distributed.session():
    metrics = clip.train(sys.argv[1], sys.argv[2], config, progress=False)
    if distributed.ranks_from_env().main:
        print(json.dumps(metrics["zero_shot_accuracy"]))
""")
    printed = torchrun(script=[str(script), str(shapes_folder), str(tmp_path / "two")])
    one_process("train", "clip", str(shapes_folder), "--out", str(tmp_path / "one"), *CLIP)
    assert_same_training(state(tmp_path / "one"), state(tmp_path / "two"), "model", learning_rates(1e-3, 100, 6))
    assert float(printed) == state(tmp_path / "one")["history"][-1]["zero_shot_accuracy"]


def test_ranks_come_from_torchrun_and_bad_ones_are_one_line_errors():
    assert distributed.ranks_from_env({}) == distributed.Ranks(0, 1, 0)
    ranks = distributed.ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ranks.rank, ranks.world, ranks.local_rank, ranks.main, ranks.several) == (3, 4, 1, False, True)
    with pytest.raises(UserError, match="whole numbers"):
        distributed.ranks_from_env({"RANK": "x"})
    with pytest.raises(UserError, match="below WORLD_SIZE=2"):
        distributed.ranks_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_each_rank_takes_its_share_on_its_own_gpu():
    two = distributed.Ranks(1, 2, 1)
    assert distributed.shard(torch.arange(8), two).tolist() == [4, 5, 6, 7]
    assert distributed.shard(list("abcd"), two) == ["c", "d"]
    assert distributed.shard(list("abc"), distributed.Ranks()) == list("abc")
    assert distributed.rank_device("cuda", two) == torch.device("cuda", 1)
    assert distributed.rank_device("cuda:0", two) == torch.device("cuda", 0)  # named: kept
    assert distributed.rank_device("cpu", two) == torch.device("cpu")
    assert [distributed.backend(torch.device(d)) for d in ("cuda:1", "cpu")] == ["nccl", "gloo"]
    with pytest.raises(UserError, match="batch_size=6 must be a multiple of the 4 processes .* set batch_size=4"):
        distributed.check_batch(6, distributed.Ranks(0, 4))
    distributed.check_batch(6, distributed.Ranks())


def test_an_odd_batch_under_torchrun_is_refused_before_training(shapes_folder, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "vqgan", str(shapes_folder), "--out", str(tmp_path / "out"), "--quiet",
                 *VQGAN, "batch_size=5"]) == 2
    assert "batch_size=5 must be a multiple of the 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("bf16_gpu", "expected"), [(True, torch.bfloat16), (False, None)])
def test_cuda_training_autocasts_to_bf16_where_the_gpu_has_it(monkeypatch, bf16_gpu, expected):
    """`--device cuda`: each recipe's step runs under training_autocast (no GPU here: its choice)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_gpu)
    with pytest.warns(UserWarning) if expected and not torch.cuda.is_available() else contextlib.nullcontext():
        context = training_autocast(torch.device("cuda"), True)
    if expected is None:
        assert not isinstance(context, torch.autocast)
    else:
        assert isinstance(context, torch.autocast) and (context.device, context.fast_dtype) == ("cuda", expected)
    assert not isinstance(training_autocast(torch.device("cuda"), False), torch.autocast)


def test_global_batch_norm_is_batch_norm_on_one_process():
    norm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    assert distributed.global_batch_norms(norm, distributed.Ranks()) is norm
    assert type(norm[1]) is torch.nn.BatchNorm2d
    torch.manual_seed(0)
    twin = distributed.global_batch_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), distributed.Ranks(0, 2))
    assert type(twin[0]) is distributed.GlobalBatchNorm
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(twin(x), torch.nn.BatchNorm2d(4)(x))  # no process group: plain batch norm
