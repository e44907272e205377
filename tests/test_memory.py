"""Memory: the model behind size=auto predicts measured peaks (taming's attention included), and
running out of memory is one line that names a size that fits, with no empty run folder left.

The tiny preset's VQGAN (factor 2, attention at the token grid) makes the attention's (hw × hw)
matrix the largest term from about 64 px, as it is for real VQGANs at large sizes: a model that
is linear in the pixels underestimates its peak several times at 128 px. Peaks are measured the
way the model counts them (live tensor bytes), so the comparison is deterministic.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap

import pytest
import torch

from vqclip.cli import main
from vqclip.config import build_config
from vqclip.errors import UserError
from vqclip.generation import _decoder, _memory_model, _objective, build_timeline, generate
from vqclip.loading import load_models
from vqclip.machine.memory import SAFETY, free_memory_bytes, is_out_of_memory, measure_peak_bytes
from vqclip.machine.precision import autocast, resolve_precision
from vqclip.models.vqgan import VQGAN

TOLERANCE = 0.05  # predicted vs measured peak; measured here: within 1.7 % (shapes) and 0.6 % (tiny)
ALLOCATOR_ERROR = ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 53687091200 bytes. "
                   "Error code 12 (Cannot allocate memory)")


@pytest.fixture(scope="module")
def tiny(make_tiny_preset):
    return make_tiny_preset(steps=2)


def setup(preset: str, **overrides):
    """(config, models, dtype, compute) of a run with these settings."""
    config = build_config(preset, {"prompts": ["a red circle"], "device": "cpu", **overrides})
    models = load_models(config)
    dtype = resolve_precision(config.precision, models.device)
    return config, models, dtype, models.in_precision(dtype)


def memory_model(config, models, dtype, compute):
    return _memory_model(config, models, compute, build_timeline(config), dtype)(int(config.cutn))


def step_peak(config, models, dtype, compute, side: int) -> int:
    """The peak bytes of one step of the run at side × side, decoder to backward, as run() does it."""
    objective = _objective(config, compute.clip, build_timeline(config), torch.Generator().manual_seed(0))
    grid = side // models.vqgan.factor
    z = models.vqgan.tokens_to_z(torch.zeros(config.batch_size, grid, grid, dtype=torch.long)).requires_grad_(True)
    decode = _decoder(models.vqgan, compute.vqgan, config, (side, side))

    def step():
        with autocast(models.device, dtype):
            loss = sum(objective(decode(z), z, 0).values())
        loss.backward()

    return measure_peak_bytes(step, models.device)


# --- the memory model ------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", [False, True])
def test_predicted_peaks_match_measured_peaks_where_attention_dominates(tiny, checkpoint):
    run = setup(str(tiny), checkpoint_decoder=checkpoint)
    model = memory_model(*run)  # from probes at 8, 16 and 24 px
    for side in (96, 128):
        measured = step_peak(*run, side)
        assert model.predict(side, side) == pytest.approx(measured, rel=TOLERANCE), side


def test_predicted_peaks_match_measured_peaks_of_the_shapes_models():
    run = setup("shapes", init={"mode": "random"})  # the preset's settings: fp32, cutn 16
    model = memory_model(*run)  # from probes at 16, 32 and 48 px
    for side in (192, 256):
        measured = step_peak(*run, side)
        assert model.predict(side, side) == pytest.approx(measured, rel=TOLERANCE), side


def test_size_auto_keeps_an_attention_heavy_step_within_the_budget(tiny, tmp_path):
    budget = 60 * 2**20
    result = generate("a red circle", preset=str(tiny), size="auto", memory_budget_mb=60, steps=1,
                      run_dir=str(tmp_path / "run"), quiet=True)
    side = result.config["size"][0]
    # A linear model chose far larger sides here; at 256 px the attention alone needs 5 GB.
    assert side <= 128
    run = setup(str(tiny))
    assert step_peak(*run, side) <= SAFETY * budget * (1 + TOLERANCE)
    assert step_peak(*run, side + 8) > SAFETY * budget  # and it used the budget: no much larger side fits


def test_free_memory_counts_the_address_space_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, hard))  # as `ulimit -v` would
    try:
        available = free_memory_bytes(torch.device("cpu"))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert 0.9 * 2**30 < available <= 2**30


def test_the_allocators_errors_are_out_of_memory():
    assert is_out_of_memory(RuntimeError(ALLOCATOR_ERROR))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


# --- out of memory in a run ----------------------------------------------------------------------


@pytest.fixture
def decoder_fails_above(monkeypatch):
    """decoder_fails_above(grid): decoding a latent wider than `grid` raises the CPU allocator's
    error (the small probes that size the advice still decode)."""
    def install(grid: int, when=lambda: True):
        decode = VQGAN.decode

        def failing(self, z_q, *args, **kwargs):
            if z_q.shape[-1] > grid and when():
                raise RuntimeError(ALLOCATOR_ERROR)
            return decode(self, z_q, *args, **kwargs)

        monkeypatch.setattr(VQGAN, "decode", failing)

    return install


def suggested_size(message: str) -> tuple[int, int]:
    width, height = re.search(r"--size (\d+) (\d+)", message).groups()
    return int(width), int(height)


def run_folders(root) -> list:
    return [path for path in root.glob("*/*") if path.is_dir()] if root.exists() else []


def test_out_of_memory_in_the_first_step_is_one_line_with_a_size_that_fits(tiny, tmp_path, capsys,
                                                                           decoder_fails_above, monkeypatch):
    decoder_fails_above(16)
    code = main(["a red circle", "-p", str(tiny), "--size", "128", "128", "memory_budget_mb=60",
                 f"outputs_root={tmp_path / 'outputs'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("vqclip: error: out of memory on cpu while optimising at size 128×128 with cutn 4 "
                          "and batch 1: "), err
    width, height = suggested_size(err)
    assert width == height and width % 2 == 0 and width < 128
    assert f"or keep the size and improve it a window at a time: window=[{width},{height}]" in err
    assert run_folders(tmp_path / "outputs") == []  # no run folder for a run that made no step
    monkeypatch.undo()
    run = setup(str(tiny))
    assert step_peak(*run, width) <= SAFETY * 60 * 2**20 * (1 + TOLERANCE)  # the suggestion fits


def test_out_of_memory_keeps_the_shape_of_the_size(tiny, tmp_path, decoder_fails_above):
    decoder_fails_above(16)
    with pytest.raises(UserError, match="at size 256×64 ") as caught:
        generate("a red circle", preset=str(tiny), size=[256, 64], memory_budget_mb=60,
                 outputs_root=str(tmp_path / "outputs"), quiet=True)
    width, height = suggested_size(str(caught.value))
    assert width < 256 and width / height == pytest.approx(4, rel=0.05)  # sides are multiples of 2


def test_out_of_memory_while_making_the_initial_latent(tiny, tmp_path, monkeypatch):
    def initial_z(*args, **kwargs):
        raise RuntimeError(ALLOCATOR_ERROR)

    monkeypatch.setattr("vqclip.generation.initial_z", initial_z)
    with pytest.raises(UserError, match="out of memory on cpu while making the initial latent at size 32×32.*"
                                        r"--size \d+ \d+|no smaller size"):
        generate("a red circle", preset=str(tiny), memory_budget_mb=60, outputs_root=str(tmp_path / "outputs"),
                 quiet=True)
    assert run_folders(tmp_path / "outputs") == []


def test_a_run_folder_the_user_had_is_kept_and_one_made_for_the_run_is_removed(tiny, tmp_path,
                                                                                 decoder_fails_above):
    decoder_fails_above(16)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for run_dir in (mine, tmp_path / "new" / "run"):
        with pytest.raises(UserError, match="out of memory"):
            generate("a red circle", preset=str(tiny), size=[128, 128], memory_budget_mb=60, run_dir=str(run_dir),
                     quiet=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "new" / "run").exists()


def test_out_of_memory_after_a_step_keeps_the_run_folder(tiny, tmp_path, decoder_fails_above):
    steps = []
    decoder_fails_above(16, when=lambda: len(steps) >= 1)  # the second step runs out of memory
    with pytest.raises(UserError, match="out of memory"):
        generate("a red circle", preset=str(tiny), size=[128, 128], memory_budget_mb=60, steps=3,
                 run_dir=str(tmp_path / "run"), callback=steps.append, quiet=True)
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1]


def test_running_out_of_cpu_memory_for_real(tmp_path):
    """The reported command, in a process whose address space is capped 1.5 GB above what it has
    mapped once its libraries are loaded: the allocator fails in the first step."""
    outputs = tmp_path / "outputs"
    argv = ["a red circle", "-p", "shapes", "init.mode=random", "init.weight=0", "--size", "2048", "2048",
            "--steps", "1", f"outputs_root={outputs}"]
    script = textwrap.dedent(f"""
        import resource, sys
        import open_clip, taming.modules.diffusionmodules.model, torch
        from vqclip.cli import main
        with open("/proc/self/status") as status:
            mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        cap = mapped + 3 * 2**29
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        sys.exit(main({argv!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqclip: error: out of memory on cpu while optimising at size "
                                                   "2048×2048 with cutn 16 and batch 1: "), done.stderr
    width, height = suggested_size(lines[0])
    assert width == height and width % 4 == 0 and 64 <= width < 2048
    assert run_folders(outputs) == []
