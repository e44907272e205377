"""The CUDA subset (`pytest -m cuda`, run by .ci/gpu on a machine with an NVIDIA GPU).

Each test runs one feature on the GPU end to end: generation with the tiny shapes models and with
the real architectures (random weights in the real file layout), bf16 autocast, video, the prior,
a batch, and size=auto against the memory CUDA reports free. Without a CUDA device every test is
skipped with the reason.
"""

from __future__ import annotations

import json

import pytest
import torch

from vqclip.cli import main

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by .ci/gpu)")]


def test_shapes_run_on_the_gpu_in_bf16_and_draws_the_prompt(tmp_path):
    from vqclip import generate
    from vqclip.machine.precision import fast_bf16, resolve_precision
    from vqclip.shapes import judge

    device = torch.device("cuda")
    expected = torch.bfloat16 if fast_bf16(device) else torch.float32
    assert resolve_precision("auto", device) == expected
    result = generate("a red circle on a blue background", preset="shapes", device="cuda", precision="auto",
                      seed=1, run_dir=str(tmp_path / "run"), quiet=True)
    verdict = judge.judge(result.images[0])
    assert (verdict.colour, verdict.background) == ("red", "blue")
    assert result.final_path.is_file() and result.steps_done == 30


def test_real_architectures_take_a_step_at_128_px(tmp_path):
    from vqclip import generate
    from vqclip.bench.concurrent import write_random_real_vqgan

    config, checkpoint = write_random_real_vqgan(tmp_path)
    result = generate("a lighthouse", device="cuda", steps=2, size=[128, 128], cutn=16, seed=0, quiet=True,
                      init={"mode": "random"}, vqgan={"name": None, "config": str(config), "checkpoint": str(checkpoint)},
                      clip={"models": [{"name": "ViT-B-32"}]}, run_dir=str(tmp_path / "run"))
    assert result.images.shape == (1, 3, 128, 128) and torch.isfinite(result.images).all()
    assert len(result.losses) == 2


def test_video_animates_on_the_gpu(tmp_path):
    from vqclip import video

    result = video.animate("a red circle", preset="shapes-zoom", device="cuda", output=str(tmp_path / "zoom.gif"),
                           run_dir=str(tmp_path / "run"), video={"frames": 3, "steps_per_frame": 2})
    assert len(result.frames) == 3 and result.output.is_file()


def test_prior_samples_on_the_gpu(tmp_path, capsys):
    out = tmp_path / "circle.png"
    assert main(["prior", "sample", "a red circle on a white background", "--prior", "shapes", "-p", "shapes",
                 "--num", "4", "-o", str(out), "device=cuda"]) == 0
    assert out.is_file() and len(capsys.readouterr().out.split()) == 5  # the best, then the 4 in rank order


def test_a_batch_runs_its_jobs_on_the_gpu(tmp_path):
    import vqclip.batch

    jobs = [{"prompt": prompt, "preset": "shapes", "steps": 5, "seed": 1}
            for prompt in ("a red circle", "a blue square")]
    results = list(vqclip.batch.run(jobs, out=tmp_path / "batch"))
    assert [result.status for result in results] == ["ok", "ok"]
    for line in (tmp_path / "batch" / "summary.jsonl").read_text().splitlines():
        assert json.loads(line)["settings"]["preset"] == "shapes"


def test_size_auto_fits_what_cuda_reports_free(tmp_path):
    from vqclip import generate
    from vqclip.machine.memory import free_memory_bytes

    free = free_memory_bytes(torch.device("cuda"))
    reported, total = torch.cuda.mem_get_info()
    assert reported <= free <= total  # CUDA's free memory, plus what torch has cached and may reuse
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = generate("a red circle", preset="shapes", device="cuda", size="auto", memory_budget_mb=1500, steps=2,
                      init={"mode": "random", "weight": 0.0}, quiet=True, run_dir=str(tmp_path / "run"))
    side = result.config["size"][0]
    assert side >= 256  # 1500 MB holds far more than the smallest size
    assert torch.cuda.max_memory_allocated() - before <= 1500 * 2**20
