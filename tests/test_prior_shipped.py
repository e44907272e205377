"""The shapes world's shipped prior: its files, its size budget, and what its samples draw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vqclip.prior.weights import load_prior

WEIGHTS = Path(__file__).resolve().parents[1] / "vqclip" / "shapes" / "weights"


def test_shipped_files_fit_the_budget():
    prior = WEIGHTS / "prior.safetensors"
    assert prior.stat().st_size < 15e6
    total = sum(path.stat().st_size for path in WEIGHTS.iterdir() if path.suffix in (".safetensors", ".json", ".yaml"))
    assert total <= 35e6  # the whole shapes world: VQGAN + CLIP + prior
    description = json.loads((WEIGHTS / "prior.json").read_text())
    assert description["tokenizer"]["kind"] == "open_clip" and len(description["tokenizer"]["kept_ids"]) < 100
    assert description["vqgan"]["name"] == "shapes"


def test_shipped_prior_loads_by_name_and_samples_a_grid():
    from vqclip.models.registry import load_vqgan_from_config
    from vqclip.prior.sample import SampleSettings, sample_images

    prior = load_prior("shapes")
    assert prior.model.config.grid == [16, 16] and prior.model.config.codebook_size == 512
    assert prior.tokenizer.unknown_words("a red dragon") == ["dragon"]
    vqgan = load_vqgan_from_config({"name": "shapes"}, progress=False)
    result = sample_images(prior, vqgan, "a red circle on a blue background", SampleSettings(count=2, seed=0))
    assert result.images.shape == (2, 3, 64, 64) and result.tokens.max() < 512
    assert torch.equal(result.tokens, sample_images(prior, vqgan, "a red circle on a blue background",
                                                    SampleSettings(count=2, seed=0)).tokens)


@pytest.mark.slow
def test_shipped_prior_samples_meet_the_targets():
    """The prior alone, best of 16 by CLIP's worst view, on the 24 colour × shape prompts (README figures)."""
    from vqclip.models.clip import load_clip_ensemble
    from vqclip.models.registry import load_vqgan_from_config, resolve_clip
    from vqclip.shapes.data import prior_figures

    vqgan = load_vqgan_from_config({"name": "shapes"}, progress=False)
    clip = load_clip_ensemble([resolve_clip({"name": "shapes", "weight": 1.0})])
    grades = prior_figures(WEIGHTS, vqgan, clip, candidates=16, seed=0)
    # measured 100 % / 83.3 %; over 8 sampling seeds shape 70.8-91.7 %, mean 83.3 % (best of 8: 78.6 %)
    assert grades["colour"] >= 0.95 and grades["shape"] >= 0.8


@pytest.mark.slow
def test_shipped_preset_meets_the_targets_at_half_its_steps(tmp_path):
    """`vqclip shapes eval --init prior` at half the `shapes` preset's steps (README figures)."""
    from vqclip.config import build_config
    from vqclip.shapes import evaluate

    steps = build_config("shapes", {}, [])["steps"] // 2
    report = evaluate.evaluate(evaluate.default_prompts(), 1, out=tmp_path,
                               dotlist=["init.mode=prior", "init.prior=shapes", f"steps={steps}"])
    summary = report["summary"]
    assert summary["colour"] >= 0.95 and summary["background"] >= 0.95 and summary["shape"] >= 0.8
