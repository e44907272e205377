"""The prior's tokenizers, data files, training loop and sampler, on tiny models and the shapes world."""

from __future__ import annotations

import json

import pytest
import torch

from vqclip.errors import UserError
from vqclip.prior import data as prior_data
from vqclip.prior.model import BartPrior, PriorConfig
from vqclip.prior.sample import SampleSettings, clip_views, filter_logits, rank_by_clip, sample_tokens
from vqclip.prior.tokenizer import BEGIN, END, PAD, UNKNOWN, BartBpeTokenizer, ClipBpeTokenizer, clip_bpe_ids
from vqclip.prior.weights import LoadedPrior, load_prior
from vqclip.train.prior import PriorTrainConfig as TrainConfig
from vqclip.train.prior import fit as train

TINY = dict(steps=30, batch_size=4, lr=1e-2, warmup=2, eval_every=10, eval_items=8, checkpoint_every=5,
            width=32, heads=2, glu=48, encoder_layers=1, decoder_layers=1, text_length=16, bf16=False)


WORLD_VQGAN = {"vqgan": "shapes", "size": 64, "codebook_size": 512, "factor": 4}


def world_batches(items, batch_size):
    """`batches(start)` for prior_data.build_data over (scene, caption) items of the shapes world."""
    from vqclip.shapes import world

    def batches(start: int):
        for first in range(start, len(items), batch_size):
            chunk = items[first:first + batch_size]
            yield torch.stack([world.to_tensor(world.draw(scene)) for scene, _ in chunk]), [c for _, c in chunk]

    return batches


@pytest.fixture(scope="module")
def shapes_vqgan():
    from vqclip.models.registry import load_vqgan_from_config

    return load_vqgan_from_config({"name": "shapes"}, progress=False)


@pytest.fixture(scope="module")
def world_data_file(tmp_path_factory, shapes_vqgan):
    from vqclip.shapes.data import prior_tokens

    path = tmp_path_factory.mktemp("prior-data") / "data.pt"
    prior_tokens(path, shapes_vqgan, WORLD_VQGAN, 40, 0, "train", resume=False, progress=False)
    return path


@pytest.fixture(scope="module")
def world_data(world_data_file):
    return prior_data.load_data(world_data_file)


# -- tokenizers ----------------------------------------------------------------------------------
def test_pruned_clip_tokenizer_rows_and_unknown_words():
    kept = clip_bpe_ids("a red circle on a blue background")
    tokenizer = ClipBpeTokenizer(kept)
    assert tokenizer.vocab_size == 4 + len(set(kept))
    row = tokenizer.encode(["a red circle"], 8)[0].tolist()
    assert row[0] == BEGIN and row[4] == END and row[5:] == [PAD] * 3 and min(row[1:4]) >= 4
    assert tokenizer.encode([""], 4)[0].tolist() == [BEGIN, END, PAD, PAD]  # the unconditional row
    assert UNKNOWN in tokenizer.encode(["a purple circle"], 8)[0].tolist()
    assert tokenizer.unknown_words("a purple circle") == ["purple"]
    cut = tokenizer.encode(["a red circle on a blue background"], 4)[0].tolist()
    assert cut[0] == BEGIN and cut[-1] == END  # cut to length, the end token kept


def test_full_clip_tokenizer_uses_open_clips_ids():
    tokenizer = ClipBpeTokenizer()
    row = tokenizer.encode(["red"], 5)[0].tolist()
    assert row == [49406, *clip_bpe_ids("red"), 49407, 0, 0] and tokenizer.vocab_size == 49408


def test_bart_tokenizer_merges_by_rank():
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "Ġred": 4, "Ġa": 5, "Ġr": 6, "ed": 7}
    merges = ["#version: 0.2", "e d", "Ġ r", "Ġr ed", "Ġ a"]
    tokenizer = BartBpeTokenizer(vocab, merges)
    assert tokenizer.subwords("red") == ["Ġred"]
    # "dog": Ġ, d, o, g stay apart (no merges for them): four unknown tokens
    assert tokenizer.encode(["A  red dog"], 10)[0].tolist() == [0, 5, 4, 3, 3, 3, 3, 2, 1, 1]


# -- data files ----------------------------------------------------------------------------------
def test_build_data_resumes_and_matches_a_straight_build(tmp_path, shapes_vqgan, world_data):
    from vqclip.shapes.data import world_items

    vqgan_info = lambda vqgan: WORLD_VQGAN  # noqa: E731

    items, sources = world_items(40, 0, "train"), [f"shapes/train/0/{i}" for i in range(40)]
    partial = prior_data.build_data(world_batches(items[:16], batch_size=8), sources[:16], shapes_vqgan,
                                    vqgan_info(shapes_vqgan), tmp_path / "d.pt", save_every=8, progress=False)
    assert len(partial.captions) == 16
    with pytest.raises(UserError, match="--resume"):
        prior_data.build_data(world_batches(items, 8), sources, shapes_vqgan, vqgan_info(shapes_vqgan),
                              tmp_path / "d.pt", progress=False)
    resumed = prior_data.build_data(world_batches(items, 8), sources, shapes_vqgan, vqgan_info(shapes_vqgan),
                                    tmp_path / "d.pt", resume=True, progress=False)
    straight = prior_data.build_data(world_batches(items, 8), sources, shapes_vqgan, vqgan_info(shapes_vqgan),
                                     tmp_path / "straight.pt", progress=False)
    assert torch.equal(resumed.image_tokens, straight.image_tokens) and resumed.captions == straight.captions
    assert resumed.captions == world_data.captions
    assert world_data.image_tokens.shape == (40, 16, 16) and world_data.image_tokens.dtype == torch.int16
    assert world_data.bpe_rows([0])[0] == clip_bpe_ids(world_data.captions[0])
    with pytest.raises(UserError, match="other images"):
        prior_data.build_data(world_batches(items, 8), sources[::-1], shapes_vqgan, vqgan_info(shapes_vqgan),
                              tmp_path / "d.pt", resume=True, progress=False)


# -- training ------------------------------------------------------------------------------------
def test_training_lowers_the_loss_writes_a_prior_and_resumes_exactly(tmp_path, world_data):
    config = TrainConfig(**TINY)
    metrics = train(world_data, tmp_path / "straight", config, progress=False)
    history = metrics["history"]
    assert [h["step"] for h in history] == [10, 20, 30] and metrics["tokens_per_second"] > 0
    # uniform guessing costs log(513) = 6.24; the held-out loss must fall well below it and keep falling
    assert history[0]["held_out_loss"] < 6.0 and history[-1]["held_out_loss"] < history[0]["held_out_loss"] - 0.2
    prior = load_prior(tmp_path / "straight")
    assert prior.model.config.grid == [16, 16] and prior.model.config.image_vocab == 512
    assert prior.model.config.text_vocab < 100  # the pruned vocabulary
    assert json.loads((tmp_path / "straight" / "prior.json").read_text())["vqgan"]["vqgan"] == "shapes"

    # seeded: the same settings give the same weights
    state_dir = tmp_path / "again"
    train(world_data, state_dir, TrainConfig(**TINY), progress=False)
    assert torch.load(state_dir / "train_state.pt", weights_only=True)["step"] == 30
    straight = load_prior(tmp_path / "straight").model.state_dict()
    again = load_prior(state_dir).model.state_dict()
    assert all(torch.equal(straight[k], again[k]) for k in straight)  # seeded: the same run twice


def stop_after_saving(monkeypatch, at_step: int) -> None:
    """The next training run is killed right after it writes its state at step `at_step`."""
    from vqclip.train.loop import TrainState

    original = TrainState.save

    def save_then_stop(self, step, settings):
        original(self, step, settings)
        if step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainState, "save", save_then_stop)


def test_resume_after_a_stop_gives_the_same_weights(tmp_path, world_data, monkeypatch):
    straight = tmp_path / "straight"
    train(world_data, straight, TrainConfig(**TINY), progress=False)
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        stop_after_saving(patch, 15)
        with pytest.raises(KeyboardInterrupt):
            train(world_data, stopped, TrainConfig(**TINY), progress=False)
    assert not (stopped / "prior.safetensors").exists()
    train(world_data, stopped, TrainConfig(**TINY), resume=True, progress=False)
    a, b = load_prior(straight).model.state_dict(), load_prior(stopped).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_state_file_of_the_earlier_layout_gives_the_same_weights(tmp_path, world_data,
                                                                               monkeypatch):
    """train_state.pt files written before the random streams were saved as one dict (torch_rng,
    generator, rng, rng_version at the top level) still resume to the weights of a straight run."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(world_data, straight, TrainConfig(**TINY), progress=False)
    with monkeypatch.context() as patch:
        stop_after_saving(patch, 15)
        with pytest.raises(KeyboardInterrupt):
            train(world_data, stopped, TrainConfig(**TINY), progress=False)
    state = torch.load(stopped / "train_state.pt", weights_only=True)
    streams = state.pop("rng")
    state.update(torch_rng=streams["torch"], generator=streams["generator"], rng=streams["python"],
                 rng_version=streams["python_version"])
    torch.save(state, stopped / "train_state.pt")
    train(world_data, stopped, TrainConfig(**TINY), resume=True, progress=False)
    a, b = load_prior(straight).model.state_dict(), load_prior(stopped).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_prior_does_not_import_the_shapes_world():
    """The prior is the product's; the shapes world is one user of it (the shared training helpers
    live in vqclip/train/, the precision choice in vqclip.machine.precision)."""
    import subprocess
    import sys

    code = "import vqclip.train.prior, sys; print([m for m in sys.modules if m.startswith('vqclip.shapes')])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_resume_reads_the_settings_from_the_output_folder(tmp_path, capsys):
    """`train prior --resume` continues the stored run: model settings need not be given again, the same
    value is fine, another value is one line naming the key and both values, and steps may grow."""
    from vqclip.cli import main

    out = tmp_path / "prior"
    world = ["world_images=40", "world_prompts=0", "eval_items=8", "merge_flat_codes=false"]
    first = {**TINY, "steps": 10, "width": 48, "glu": 40, "decoder_layers": 2}
    command = ["train", "prior", "shapes", "--out", str(out), "--quiet"]
    assert main([*command, *world, *[f"{k}={v}" for k, v in first.items()]]) == 0
    ten_steps = load_prior(out).model.state_dict()
    capsys.readouterr()
    assert main([*command, "--resume", "width=64"]) == 2
    assert capsys.readouterr().err == (f"vqclip: error: width=64 differs from width=48 stored in {out / 'train_state.pt'}: "
                                       "leave width out to continue that run, or train into another --out\n")
    assert main([*command, "--resume", "steps=5"]) == 2
    assert "steps=5 is fewer than the 10" in capsys.readouterr().err

    assert main([*command, "--resume", "steps=15", "width=48"]) == 0
    metrics = json.loads((out / "prior-metrics.json").read_text())
    assert {k: metrics["train"][k] for k in first} == {**first, "steps": 15}  # the first run's, steps raised
    assert [h["step"] for h in metrics["history"]] == [10, 15]
    prior = load_prior(out)
    assert (prior.model.config.width, prior.model.config.glu, prior.model.config.decoder_layers) == (48, 40, 2)
    assert not all(torch.equal(ten_steps[k], v) for k, v in prior.model.state_dict().items())  # trained on


def test_resuming_a_checkpoint_without_stored_settings_at_other_sizes_is_one_line(tmp_path, world_data):
    """train_state.pt written before the settings were stored in it: other sizes are a UserError."""
    train(world_data, tmp_path, TrainConfig(**{**TINY, "steps": 5}), progress=False)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    del state["train"]
    torch.save(state, tmp_path / "train_state.pt")
    with pytest.raises(UserError, match="holds a model of other sizes than these settings: give the first run's "
                                        "values"):
        train(world_data, tmp_path, TrainConfig(**{**TINY, "steps": 5, "width": 64}), resume=True, progress=False)


def test_raising_steps_on_resume_follows_the_longer_runs_schedule(tmp_path, world_data, monkeypatch):
    """The cosine is rebuilt from `steps`: after a raise, each step's rate is the longer run's rate at that
    step (the first step after the resume included), not the old schedule's (zero at its end)."""
    from vqclip.train.loop import warmup_cosine

    rates = []
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return adamw_step(self, *args, **kwargs)

    train(world_data, tmp_path, TrainConfig(**{**TINY, "steps": 10}), progress=False)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    train(world_data, tmp_path, TrainConfig(**{**TINY, "steps": 15}), resume=True, progress=False)
    longer = warmup_cosine(TINY["warmup"], 15)
    assert rates == pytest.approx([TINY["lr"] * longer(step) for step in range(10, 15)], rel=1e-12)
    assert rates[0] == pytest.approx(0.25 * TINY["lr"])  # 2/3 of the way down the longer cosine, not the ended run's 0


def test_too_little_data_to_hold_out_names_the_settings_to_change(world_data):
    with pytest.raises(UserError) as caught:
        train(world_data, "unused", TrainConfig(**{**TINY, "eval_items": 256}), progress=False)
    assert str(caught.value) == ("40 training items are too few to hold out eval_items=256 (under half of them can "
                                 "be held out): set eval_items=19 or lower, or pass held-out data with --held-out")
    tiny = prior_data.PriorData(world_data.image_tokens[:2], world_data.captions[:2], world_data.text_bpe[:2],
                                world_data.vqgan, world_data.sources[:2])
    with pytest.raises(UserError, match=r"eval_items=1 \(under half of them can be held out\): pass held-out"):
        train(tiny, "unused", TrainConfig(**{**TINY, "eval_items": 1}), progress=False)


# -- sampling ------------------------------------------------------------------------------------
def test_clip_views_are_the_image_mirrored_and_shifted_each_way():
    image = torch.zeros(1, 3, 20, 20)
    image[..., 10, 5] = 1.0
    views = clip_views(image)  # shift: 5 % of 20 px = 1 px
    bright = [tuple(torch.nonzero(view[0]).flatten().tolist()) for view in views]
    assert bright == [(10, 5), (10, 14), (10, 4), (10, 6), (9, 5), (11, 5)]
    assert torch.equal(clip_views(torch.ones(2, 3, 8, 8)), torch.ones(12, 3, 8, 8))  # borders replicated


def test_rank_by_clip_scores_each_image_by_its_worst_view():
    from types import SimpleNamespace

    def centre_brightness(images):  # a "CLIP" that sees only the centre pixel
        centre = images[:, 0, images.shape[-2] // 2, images.shape[-1] // 2]
        return torch.stack([centre, torch.zeros_like(centre)], -1)

    member = SimpleNamespace(weight=2.0, encode_text=lambda texts: torch.tensor([[1.0, 0.0]]),
                             encode_image=centre_brightness)
    dot, block = torch.zeros(1, 3, 40, 40), torch.zeros(1, 3, 40, 40)
    dot[..., 20, 20] = 1.0  # bright only in the one alignment it was drawn in
    block[..., 15:26, 15:26] = 0.8  # a little less bright, in every view
    scores = rank_by_clip(SimpleNamespace(members=[member]), torch.cat([dot, block]), "a bright centre")
    assert scores == pytest.approx([0.0, 1.6])


def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[False, False, True, True]]
    probabilities = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, 0.03
    kept = ~torch.isinf(filter_logits(logits, 0, float(probabilities[0] + 0.01)))
    assert kept.tolist() == [[True, True, False, False]]
    assert (~torch.isinf(filter_logits(logits, 0, 0.1))).sum() == 1  # the most likely token always stays


def tiny_prior(seed: int = 0, codebook: int = 20) -> LoadedPrior:
    torch.manual_seed(seed)
    config = PriorConfig(text_vocab=40, text_length=8, image_vocab=24, codebook_size=codebook, grid=[3, 4],
                         width=32, heads=2, glu=48, encoder_layers=1, decoder_layers=2, pad_token=PAD)
    model = BartPrior(config).eval()
    return LoadedPrior(model, ClipBpeTokenizer(clip_bpe_ids("a red circle on a blue background")), {})


def reference_sample(prior: LoadedPrior, text: str, settings: SampleSettings) -> torch.Tensor:
    """No cache: the whole prefix through the decoder at every step, drawing with the same generator."""
    model = prior.model
    config = model.config
    generator = torch.Generator().manual_seed(settings.seed)
    rows = prior.tokenizer.encode(["", text], config.text_length)
    rows = rows.repeat_interleave(settings.count, 0)
    state = model.encoder(rows)
    mask = rows.ne(config.pad_token)[:, None, None, :]
    previous = torch.full((len(rows), 1), config.image_vocab)
    s, n = settings.supercondition, settings.count
    for _ in range(config.image_length):
        logits = model.decoder(previous, state, mask)[:, -1, :config.codebook_size]
        logits = filter_logits((logits[:n] * (1 - s) + logits[n:] * s) / settings.temperature,
                               settings.top_k, settings.top_p)
        drawn = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        previous = torch.cat([previous, drawn.repeat(2, 1)], 1)
    return previous[:n, 1:].view(n, *config.grid)


@torch.no_grad()
def test_kv_cache_sampling_equals_sampling_without_cache():
    prior = tiny_prior()
    settings = SampleSettings(count=3, top_k=10, top_p=0.9, supercondition=3.0, temperature=0.8, seed=5)
    tokens = sample_tokens(prior, "a red circle", settings)
    assert tokens.shape == (3, 3, 4) and tokens.max() < 20  # only codebook entries, never the extra rows
    assert torch.equal(tokens, reference_sample(prior, "a red circle", settings))
    assert torch.equal(tokens, sample_tokens(prior, "a red circle", settings))  # seeded
    assert not torch.equal(tokens, sample_tokens(prior, "a red circle", SampleSettings(**{**settings.__dict__, "seed": 6})))


@torch.no_grad()
def test_sampling_settings_are_checked():
    prior = tiny_prior()
    for bad in (dict(count=0), dict(temperature=0.0), dict(top_p=0.0), dict(top_k=-1), dict(supercondition=-1.0)):
        with pytest.raises(UserError):
            sample_tokens(prior, "a red circle", SampleSettings(**bad))
    # s = 1: the conditional row only, batched in pieces
    tokens = sample_tokens(prior, "a red circle", SampleSettings(count=5, supercondition=1.0, batch_size=2))
    assert tokens.shape == (5, 3, 4)


def test_a_priors_recommended_sampling_settings_fill_what_is_not_given():
    from vqclip.prior.sample import settings_for

    prior = tiny_prior()
    prior.info["sample"] = {"top_k": 16, "temperature": 0.7, "not_a_setting": 1}
    settings = settings_for(prior, count=3, temperature=None, top_p=0.5)
    assert (settings.count, settings.top_k, settings.temperature, settings.top_p) == (3, 16, 0.7, 0.5)
    assert settings.supercondition == SampleSettings().supercondition
    assert settings_for(prior, temperature=1.5).temperature == 1.5
    assert settings_for(prior.info, count=3) == settings_for(prior, count=3)  # the info alone (a batch's hash)
    with pytest.raises(UserError, match="temperature"):
        settings_for(prior, temperature=0.0)


def test_prior_info_reads_prior_json_without_the_weights(tmp_path):
    from vqclip.prior.weights import prior_info

    assert prior_info("shapes")["sample"] == {"supercondition": 2.0, "top_k": 16, "temperature": 0.7}
    assert prior_info("min-dalle-mini") == {}  # min-dalle's files carry no recommendation: nothing fetched
    assert prior_info(tmp_path / "nowhere") == {}  # loading it is what reports a missing folder
    (tmp_path / "prior.json").write_text('{"model": {}, "tokenizer": {}, "sample": {"top_k": 3}}')
    assert prior_info(tmp_path) == {"sample": {"top_k": 3}}
