"""Prompt parsing, timelines and the prompt loss terms (vqclip/prompts.py)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqclip.errors import UserError
from vqclip.prompts import (
    EmbeddingPrompt,
    PromptSpec,
    PromptTimeline,
    noise_embedding,
    parse_image_prompt,
    parse_noise_prompt,
    parse_prompt,
    parse_prompts,
    spherical_distance,
    split_prompts,
    split_story,
    timeline_from_schedule,
    timeline_from_story,
)

NO_STOP = float("-inf")


# ---- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, text, weight, stop",
    [
        ("a red circle", "a red circle", 1.0, NO_STOP),
        ("  a red circle  ", "a red circle", 1.0, NO_STOP),
        ("a red circle:2", "a red circle", 2.0, NO_STOP),
        ("a red circle:-1", "a red circle", -1.0, NO_STOP),
        ("a red circle:1.5:-0.2", "a red circle", 1.5, -0.2),
        ("a red circle : 2 ", "a red circle", 2.0, NO_STOP),
        ("text:1e-1", "text", 0.1, NO_STOP),
        ("text:.5", "text", 0.5, NO_STOP),
        ("text:+2.", "text", 2.0, NO_STOP),
        ("text:2:-inf", "text", 2.0, NO_STOP),
        ("a:b", "a:b", 1.0, NO_STOP),
        ("a:b:2", "a:b", 2.0, NO_STOP),
        ("a red circle:1:x", "a red circle:1:x", 1.0, NO_STOP),  # a word is text
        ("a render:3d", "a render:3d", 1.0, NO_STOP),
        ("a chess board:e4", "a chess board:e4", 1.0, NO_STOP),
        ("football score:3-1", "football score:3-1", 1.0, NO_STOP),
        ("a story:...", "a story:...", 1.0, NO_STOP),
        # URLs and Windows paths are never cut
        ("https://x.org/a.png", "https://x.org/a.png", 1.0, NO_STOP),
        ("https://x.org/a.png:0.5", "https://x.org/a.png", 0.5, NO_STOP),
        ("https://x.org:8080/a.png", "https://x.org:8080/a.png", 1.0, NO_STOP),
        ("https://x.org:8080", "https://x.org:8080", 1.0, NO_STOP),  # a port, not a weight
        ("https://x.org:8080:0.5", "https://x.org:8080", 0.5, NO_STOP),
        ("C:\\img.png", "C:\\img.png", 1.0, NO_STOP),
        ("C:\\img.png:2", "C:\\img.png", 2.0, NO_STOP),
        ("C:\\img.png:2:0.1", "C:\\img.png", 2.0, 0.1),
        # times and ratios stay text; a space or a decimal point makes a weight
        ("a clock at 10:30", "a clock at 10:30", 1.0, NO_STOP),
        ("a clock at 10:30:15", "a clock at 10:30:15", 1.0, NO_STOP),
        ("a cinematic shot 16:9", "a cinematic shot 16:9", 1.0, NO_STOP),
        ("the year 1984:2", "the year 1984:2", 1.0, NO_STOP),
        ("a clock at 10:30 :2", "a clock at 10:30", 2.0, NO_STOP),
        ("a clock at 10:30:2.0", "a clock at 10:30", 2.0, NO_STOP),
        ("a clock at 10:30:-0.5", "a clock at 10:30", -0.5, NO_STOP),
        ("a clock at 10:30:0.5:-1", "a clock at 10:30", 0.5, -1.0),
        ("a 4:3 photo:2", "a 4:3 photo", 2.0, NO_STOP),
        ("foo:10:30", "foo", 10.0, 30.0),  # after a word, two numbers are weight and stop
    ],
)
def test_parse_prompt(raw, text, weight, stop):
    assert parse_prompt(raw) == PromptSpec(text, weight, stop)


@pytest.mark.parametrize(
    "raw, names",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a:1.2.3", "'1.2.3'"),
        ("a:--1", "'--1'"),
        ("a:1e", "'1e'"),
        ("a:1..2", "'1..2'"),
        ("a:1.2.3:0.5", "'1.2.3'"),  # a broken weight before a good stop
        ("a:1:1.2.3", "'1.2.3'"),
        ("a:nan", "finite"),
        ("a:inf", "finite"),
        ("a:1e400", "finite"),
        ("a:1:nan", "stop"),
        ("a:1:inf", "stop"),
        (":2", "no text"),
        ("  :2:0.5", "no text"),
    ],
)
def test_parse_prompt_errors_are_one_line(raw, names):
    with pytest.raises(UserError) as info:
        parse_prompt(raw)
    message = str(info.value)
    assert "\n" not in message and names in message


def test_prompt_spec_validates_direct_construction():
    # presets build specs without the parser; the same checks apply
    for bad in (dict(text=""), dict(text="a", weight=float("nan")), dict(text="a", stop=float("inf"))):
        with pytest.raises(UserError):
            PromptSpec(**bad)


def test_split_prompts():
    assert split_prompts("a red circle | a blue background:0.5") == ["a red circle", "a blue background:0.5"]
    assert split_prompts("|| a ||b|") == ["a", "b"]
    assert parse_prompts("a red circle | a blue background:0.5") == [
        PromptSpec("a red circle"), PromptSpec("a blue background", 0.5)]
    for empty in ("", "  ", "|", " | | "):
        with pytest.raises(UserError, match="no prompt"):
            split_prompts(empty)


def test_split_story():
    assert split_story("a red circle ^ a blue square | sky:0.5 ^") == ["a red circle", "a blue square | sky:0.5"]
    with pytest.raises(UserError, match="no prompt"):
        split_story(" ^ ^ ")


@pytest.mark.parametrize(
    "raw, spec",
    [
        ("photo.png", PromptSpec("photo.png")),
        ("photo.png:0.5", PromptSpec("photo.png", 0.5)),
        ("C:\\img.png", PromptSpec("C:\\img.png")),
        ("C:\\img.png:2", PromptSpec("C:\\img.png", 2.0)),
        ("D:\\frames\\0001.png:-1", PromptSpec("D:\\frames\\0001.png", -1.0)),
        ("https://x.org/a.png:0.5", PromptSpec("https://x.org/a.png", 0.5)),
        ("https://x.org:8080/a.png", PromptSpec("https://x.org:8080/a.png")),
        ("frame_0010:2", PromptSpec("frame_0010", 2.0)),  # paths have no times
    ],
)
def test_parse_image_prompt(raw, spec):
    assert parse_image_prompt(raw) == spec


def test_parse_image_prompt_errors():
    for bad in ("", "a.png:1.2.3", ":0.5"):
        with pytest.raises(UserError):
            parse_image_prompt(bad)


def test_parse_noise_prompt():
    assert parse_noise_prompt("3:0.5") == (3, 0.5)
    assert parse_noise_prompt("42") == (42, 1.0)
    assert parse_noise_prompt(" 7 : -1e-1 ") == (7, -0.1)
    for bad in ("", "x", "-3", "3.5", "3:", "3:abc", "3:0.5:1", "3:inf", str(2**63)):
        with pytest.raises(UserError) as info:
            parse_noise_prompt(bad)
        assert "\n" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_prompt_only_raises_user_error(s):
    try:
        spec = parse_prompt(s)
    except UserError:
        return
    assert spec.text and spec.text == spec.text.strip()
    assert math.isfinite(spec.weight)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters=":")).filter(lambda s: s.strip()))
def test_text_without_colon_comes_back_whole(s):
    assert parse_prompt(s) == PromptSpec(s.strip())


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_characters=":"), min_size=1).filter(
        lambda s: s.strip() and not s[-1].isdigit()),
    st.floats(-100, 100, allow_nan=False),
)
def test_weight_round_trips(text, weight):
    assert parse_prompt(f"{text}:{weight!r}") == PromptSpec(text.strip(), weight)


# ---- timelines --------------------------------------------------------------------------------

def test_story_advances_every_n_steps_and_stays_on_the_last_phrase():
    timeline = timeline_from_story(["a red circle ^ a blue square | sky:0.5"], story_every=10)
    assert timeline.prompts_at(0) == [PromptSpec("a red circle")]
    assert timeline.prompts_at(9) == [PromptSpec("a red circle")]
    assert timeline.prompts_at(10) == [PromptSpec("a blue square"), PromptSpec("sky", 0.5)]
    assert timeline.prompts_at(10_000) == timeline.prompts_at(10)
    assert [s for s in range(40) if timeline.changes_at(s)] == [0, 10]


def test_story_phrases_as_a_list_and_looping():
    timeline = timeline_from_story(["a", "b", "c"], story_every=2, loop=True)
    assert [timeline.prompts_at(s)[0].text for s in range(8)] == list("aabbccaa")
    assert [s for s in range(14) if timeline.changes_at(s)] == [0, 2, 4, 6, 8, 10, 12]


def test_story_rejects_bad_step_counts_and_empty_stories():
    for every in (0, -1, 1.5, True):
        with pytest.raises(UserError):
            timeline_from_story(["a ^ b"], every)
    with pytest.raises(UserError):
        timeline_from_story([], 5)
    with pytest.raises(UserError):
        timeline_from_story(["^"], 5)


def test_schedule_lookup():
    timeline = timeline_from_schedule({100: "a city | night:0.5", 0: "a forest", "250": "a desert:-1"})
    assert timeline.prompts_at(0) == [PromptSpec("a forest")]
    assert timeline.prompts_at(99) == [PromptSpec("a forest")]
    assert timeline.prompts_at(100) == [PromptSpec("a city"), PromptSpec("night", 0.5)]
    assert timeline.prompts_at(249) == timeline.prompts_at(100)
    assert timeline.prompts_at(250) == timeline.prompts_at(10**6) == [PromptSpec("a desert", -1.0)]
    assert [s for s in range(300) if timeline.changes_at(s)] == [0, 100, 250]


def test_schedule_without_step_zero_starts_with_its_first_entry():
    timeline = timeline_from_schedule({50: "a", 80: "b"})
    assert timeline.prompts_at(0) == timeline.prompts_at(79) == [PromptSpec("a")]
    assert timeline.prompts_at(80) == [PromptSpec("b")]


def test_schedule_unchanged_entry_is_not_a_change():
    timeline = timeline_from_schedule({0: "a", 10: "a", 20: "b"})
    assert [s for s in range(30) if timeline.changes_at(s)] == [0, 20]


@pytest.mark.parametrize(
    "schedule, names",
    [({}, "empty"), ({-1: "a"}, "-1"), ({"x": "a"}, "'x'"), ({1.5: "a"}, "1.5"), ({True: "a"}, "True"),
     ({0: "a", "0": "b"}, "twice"), ({0: ""}, "step 0"), ({0: "a", 5: "b:1.2.3"}, "step 5"), ({0: 3}, "step 0")],
)
def test_schedule_errors(schedule, names):
    with pytest.raises(UserError) as info:
        timeline_from_schedule(schedule)
    assert names in str(info.value) and "\n" not in str(info.value)


def test_timeline_rejects_bad_entries():
    with pytest.raises(ValueError):
        PromptTimeline([(5, (PromptSpec("a"),))])
    with pytest.raises(ValueError):
        PromptTimeline([(0, (PromptSpec("a"),)), (0, (PromptSpec("b"),))])
    with pytest.raises(ValueError):
        timeline_from_story(["a"], 3).prompts_at(-1)


# ---- loss terms -------------------------------------------------------------------------------

def _at_angle(theta: float, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors theta apart (and one scaled, to check the normalisation)."""
    x = torch.zeros(dim, dtype=torch.float64)
    x[0] = 1.0
    e = torch.zeros(dim, dtype=torch.float64)
    e[0], e[1] = math.cos(theta), math.sin(theta)
    return 3.0 * x, e


@pytest.mark.parametrize("theta", [0.0, 0.1, math.pi / 4, math.pi / 2, 2.0, math.pi])
def test_spherical_distance_is_half_the_squared_angle(theta):
    x, e = _at_angle(theta)
    assert spherical_distance(x, e).item() == pytest.approx(theta**2 / 2, abs=1e-5)


def test_spherical_distance_broadcasts_over_the_last_dim():
    torch.manual_seed(0)
    x, e = torch.randn(5, 1, 8), torch.randn(3, 8)
    d = spherical_distance(x, e)
    assert d.shape == (5, 3)
    cos = torch.nn.functional.cosine_similarity(x, e, dim=-1).clamp(-1, 1)
    torch.testing.assert_close(d, cos.acos() ** 2 / 2, atol=1e-4, rtol=1e-4)


def test_spherical_distance_is_finite_in_half_precision_and_at_zero_distance():
    e = torch.randn(16)
    x = e.clone().half().requires_grad_()
    d = spherical_distance(x, e)
    d.backward()
    assert torch.isfinite(d) and torch.isfinite(x.grad).all()


def _embeddings(n=6, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(n, dim, generator=generator, dtype=torch.float64).requires_grad_()
    target = torch.randn(dim, generator=generator, dtype=torch.float64)
    return image, target


@pytest.mark.parametrize("weight", [1.0, 2.5, -0.7])
def test_embedding_prompt_value(weight):
    image, target = _embeddings()
    loss = EmbeddingPrompt(target, weight)(image)
    d = spherical_distance(image, target)
    sign = math.copysign(1.0, weight)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, abs(weight) * (sign * d).mean())


def test_positive_weight_pulls_negative_weight_pushes():
    image, target = _embeddings()
    for weight, should_get_closer in ((1.0, True), (-1.0, False)):
        x = image.detach().clone().requires_grad_()
        EmbeddingPrompt(target, weight)(x).backward()
        # the gradient points toward larger loss; a descent step must change the distance as meant
        stepped = x.detach() - 1e-3 * x.grad
        before = spherical_distance(x.detach(), target)
        after = spherical_distance(stepped, target)
        assert bool(((after < before) if should_get_closer else (after > before)).all())


@pytest.mark.parametrize("weight", [1.0, -1.0])
def test_stop_cuts_the_gradient_but_not_the_value(weight):
    image, target = _embeddings(n=8)
    d = spherical_distance(image, target).detach()
    sign = math.copysign(1.0, weight)
    stop = (sign * d).median().item()  # half the cutouts below it, one exactly at it
    gated = image.detach().clone().requires_grad_()
    free = image.detach().clone().requires_grad_()
    loss_gated = EmbeddingPrompt(target, weight, stop)(gated)
    loss_free = EmbeddingPrompt(target, weight)(free)
    torch.testing.assert_close(loss_gated, loss_free)  # the forward value is unchanged
    loss_gated.backward()
    loss_free.backward()
    below = sign * d < stop
    assert 0 < int(below.sum()) < len(d)
    assert torch.equal(gated.grad[below], torch.zeros_like(gated.grad[below]))
    # at and above the stop the gradient flows in full (also at the tie, which maximum would halve)
    torch.testing.assert_close(gated.grad[~below], free.grad[~below])
    assert bool((free.grad[~below].abs().sum(-1) > 0).all())


def test_embedding_prompt_module_details():
    target = torch.randn(1, 8) * 5
    prompt = EmbeddingPrompt.from_spec(PromptSpec("x", 0.5, -1.0), target)
    assert prompt.weight == 0.5 and prompt.stop == -1.0
    assert "embedding" in dict(prompt.named_buffers())
    torch.testing.assert_close(prompt.embedding.norm(), torch.tensor(1.0))
    assert EmbeddingPrompt(target, 0.0)(torch.randn(3, 8)).item() == 0.0
    with pytest.raises(ValueError):
        EmbeddingPrompt(torch.randn(2, 8))
    with pytest.raises(ValueError):
        EmbeddingPrompt(torch.randn(8), float("nan"))


def test_noise_embedding_is_determined_by_the_seed():
    a = noise_embedding(3, 512)
    assert a.shape == (512,) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(), torch.tensor(1.0))
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(noise_embedding(3, 512), a)
    assert not torch.allclose(noise_embedding(4, 512), a)
    assert noise_embedding(3, 512, dtype=torch.float16).dtype == torch.float16
