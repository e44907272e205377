"""The video pieces on their own: schedules, eases, crossfades, motion, lerp/slerp, readers and writers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqclip.config import build_config
from vqclip.errors import UserError
from vqclip.paths import looks_like_path
from vqclip.prompts import parse_prompt
from vqclip.video.animation import frame_prompts, move, smooth
from vqclip.video.frames import output_kind, read_frames, read_settings, write_video
from vqclip.video.interpolation import even_times, in_between_times, lerp, slerp
from vqclip.video.schedule import EASES, parse_schedule, quote_schedule_overrides


def test_schedule_holds_before_and_after_its_keys_and_moves_between_them():
    schedule = parse_schedule("0: 1.0, 30: 1.06, 60: 1.0", "video.zoom")
    assert schedule.at(0) == 1.0 and schedule.at(30) == 1.06 and schedule.at(200) == 1.0
    assert schedule.at(15) == pytest.approx(1.03) and schedule.at(45) == pytest.approx(1.03)
    assert parse_schedule("5: 2, 10: 4").at(0) == 2.0  # before the first key, its value holds
    assert parse_schedule(1.5).at(99) == 1.5 and parse_schedule("-0.25").at(3) == -0.25
    assert parse_schedule({0: 0, 10: 1}).at(5) == 0.5 and parse_schedule({"0": 0, "10": 1}).at(5) == 0.5


def test_eased_schedules_start_and_end_gently():
    for name, ease in EASES.items():
        assert ease(0) == 0 and ease(1) == pytest.approx(1) and ease(0.5) == pytest.approx(0.5), name
    cosine = parse_schedule("0: 0, 10: 1", ease="cosine")
    assert cosine.at(1) < 0.05 < parse_schedule("0: 0, 10: 1").at(1)
    assert EASES["ease-in-out"](0.1) < EASES["cosine"](0.1)


@pytest.mark.parametrize("text, character, expected", [
    ("0: 1.0, 30 1.05", 12, "':' after frame 30"),
    ("0: 1.0,, 30: 2", 8, "a frame number"),
    ("0: x", 4, "a number for frame 0"),
    ("0: 1.0; 30: 1.1", 7, "',' before the next key"),
    ("0: 1, 0: 2", 7, "a frame after 0"),
    ("-3: 1", 1, "a frame number"),
    ("0: 1.0, 30:", 12, "a number for frame 30"),
])
def test_a_malformed_schedule_points_at_the_offending_character(text, character, expected):
    with pytest.raises(UserError) as error:
        parse_schedule(text, "video.zoom")
    message = str(error.value)
    assert f"at character {character} " in message and expected in message and "video.zoom" in message
    assert "\n" not in message


@pytest.mark.parametrize("spec", ["", True, [1, 2], {0: "a"}, {-1: 2}, "nan", float("inf")])
def test_other_bad_schedules_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_schedule(spec, "video.angle")


def test_schedule_overrides_typed_on_a_command_line_arrive_as_strings():
    quoted = quote_schedule_overrides(["video.zoom=0: 1.0, 30: 1.05", "video.schedules.lr=0: 0.1, 9: 0.05",
                                       "video.angle=2", "steps=3", "video.translate_x={0: 1, 5: 2}"])
    config = build_config("shapes-zoom", dotlist=quoted)
    assert config.video.zoom == "0: 1.0, 30: 1.05" and config.video.schedules.lr == "0: 0.1, 9: 0.05"
    assert quoted[2:] == ["video.angle=2", "steps=3", "video.translate_x={0: 1, 5: 2}"]  # already YAML
    assert parse_schedule(config.video.translate_x).at(5) == 2.0


def test_a_timeline_crossfades_the_prompt_weights_over_the_transition():
    config = build_config("shapes-zoom", {"video": {"timeline": {0: "a red circle", 10: "a blue square:2"},
                                                    "transition": 4}})
    def weights(frame: int) -> list[tuple[str, float]]:
        return [(spec.text, round(spec.weight, 6)) for text in frame_prompts(config, frame)["prompts"]
                for spec in [parse_prompt(text)]]

    assert frame_prompts(config, 0)["prompts"] == ["a red circle:1.0:-inf"]
    assert weights(5) == [("a red circle", 1.0)]
    assert weights(6) == [("a red circle", 0.8), ("a blue square", 0.4)]  # t = 1/5, the blue prompt weighs 2
    assert weights(9) == [("a red circle", 0.2), ("a blue square", 1.6)]  # t = 4/5
    assert frame_prompts(config, 10)["prompts"] == ["a blue square:2.0:-inf"]
    assert frame_prompts(config, 50)["prompts"] == ["a blue square:2.0:-inf"]
    assert frame_prompts(build_config("shapes-zoom"), 3) == {}  # no timeline: the run's prompts


def test_motion_keeps_the_picture_at_rest_and_moves_it_as_asked(moving_circle):
    picture = moving_circle(1)[0]
    assert torch.allclose(move(picture, 1.0, 0.0, 0.0, 0.0), picture, atol=1e-5)
    shifted = move(picture, 1.0, 0.0, 4.0, 0.0)
    assert torch.allclose(shifted[:, :, 10:50], picture[:, :, 6:46], atol=1e-5)  # 4 px to the right
    zoomed = move(picture, 2.0, 0.0, 0.0, 0.0)  # the middle half, twice as large
    assert torch.allclose(zoomed[:, 30:34, 30:34], picture[:, 31:33, 31:33].repeat_interleave(2, 1)
                          .repeat_interleave(2, 2), atol=0.05)
    turned = move(picture, 1.0, 90.0, 0.0, 0.0)
    assert torch.allclose(turned, torch.rot90(picture, 1, (1, 2)), atol=1e-4)  # anticlockwise


def test_smoothing_is_an_ema_of_the_latents():
    a, b = torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3)
    assert torch.equal(smooth(None, b, 0.5), b) and torch.equal(smooth(a, b, 0.0), b)
    assert torch.allclose(smooth(a, b, 0.25), torch.full_like(b, 0.75))


def test_lerp_and_slerp_reach_the_keys_and_slerp_keeps_the_norms_on_the_arc():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 8, 4, 4, generator=generator), torch.randn(1, 8, 4, 4, generator=generator) * 3
    for blend in (lerp, slerp):
        assert torch.allclose(blend(a, b, 0.0), a) and torch.allclose(blend(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    assert torch.allclose(middle.norm(dim=1), (a.norm(dim=1) + b.norm(dim=1)) / 2, atol=1e-5)
    # The angle to each key is half the angle between them, at every position.
    def cos(x, y):
        return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))
    assert torch.allclose(cos(middle, a).acos(), cos(a, b).acos() / 2, atol=1e-4)
    assert torch.allclose(slerp(a, 2 * a, 0.5), lerp(a, 2 * a, 0.5), atol=1e-5)  # parallel: as lerp
    assert in_between_times(3, "linear") == [0.25, 0.5, 0.75]
    assert in_between_times(1, "cosine") == [pytest.approx(0.5)]
    assert not math.isclose(in_between_times(3, "ease-in-out")[0], 0.25)


class FlippingDecoder:
    """A stand-in VQGAN whose picture stays near the first key and flips over a short stretch:
    the steep sigmoid of the latent's first channel, as the shapes decoder behaves between two keys."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(20 * (z[:, :1] - 0.6)).expand(-1, 3, -1, -1)


def test_even_times_place_in_betweens_by_how_far_the_picture_has_moved():
    vqgan, a, b = FlippingDecoder(), torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4)
    shares = in_between_times(6, "linear")

    def steps_over_whole(times):
        frames = torch.stack([vqgan.decode(lerp(a, b, t))[0] for t in [0.0, *times, 1.0]])
        return (frames[1:] - frames[:-1]).abs().mean((1, 2, 3)) / (frames[-1] - frames[0]).abs().mean()
    times = even_times(vqgan, "lerp", a, b, shares, samples=28)
    before, after = steps_over_whole(shares), steps_over_whole(times)  # before: even in t
    assert before.max() > 0.5 and after.max() < 0.16, (before, after)  # an even morph: 1/7 ≈ 0.143 a step
    assert after.max() < 1.1 * after.min()
    assert times == sorted(times) and 0 < times[0] and times[-1] < 1
    # A pair whose pictures do not change keeps t as the share.
    assert even_times(vqgan, "lerp", a, a, shares, samples=16) == shares


@pytest.mark.parametrize("text, is_path", [
    ("red.png", True), ("red-circel.PNG", True), ("clip.mp4", True), ("keys/blue", True), ("frames/", True),
    ("./red", True), ("state.pt", True), ("a red circle", False), ("a red/blue circle", False),
    ("a red circle:2", False), ("red", False)])
def test_keys_that_look_like_files_are_told_from_prompts(text, is_path):
    assert looks_like_path(text) is is_path


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "frames"])
def test_written_videos_read_back_with_their_frames_fps_and_settings(tmp_path, name, moving_circle):
    frames = moving_circle(4)
    path = write_video(tmp_path / name, frames, 10, {"prompt": "a red circle"})
    back, fps = read_frames(path)
    assert len(back) == 4 and tuple(back[0].shape) == (3, 64, 64) and fps == pytest.approx(10)
    tolerance = 0.0 if name != "clip.mp4" else 0.08  # H.264 is lossy; GIF and PNG hold these colours
    assert max(float((x - y).abs().mean()) for x, y in zip(back, frames)) <= tolerance
    settings = read_settings(path)
    assert settings["prompt"] == "a red circle" and settings["frames"] == 4 and settings["fps"] == 10
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_a_writer_that_fails_leaves_no_partial_video_and_the_previous_one_survives(tmp_path, monkeypatch,
                                                                                   moving_circle):
    from vqclip.video import frames as frames_module

    for name in ("clip.mp4", "frames"):
        path = write_video(tmp_path / name, moving_circle(2), 5, {"version": 1})
        before = sorted(p.name for p in tmp_path.rglob("*"))

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(frames_module, "to_uint8", broken)
        monkeypatch.setattr(frames_module, "save_png", broken)
        with pytest.raises(OSError):
            write_video(path, moving_circle(3), 5, {"version": 2})
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
        assert len(read_frames(path)[0]) == 2 and read_settings(path)["version"] == 1


def test_output_kinds_and_the_supported_extensions(tmp_path):
    assert output_kind(tmp_path / "a.mp4") == "mp4" and output_kind(tmp_path / "a.GIF") == "gif"
    assert output_kind(tmp_path / "frames") == "folder"
    with pytest.raises(UserError, match=r"unknown video extension '\.avi'; supported: \.mp4 .*\.gif"):
        output_kind(tmp_path / "a.avi")


def test_schedules_of_nested_keys_and_their_values_per_frame():
    from vqclip.video.animation import motion_schedules, scheduled_values

    config = build_config("shapes-zoom", dotlist=quote_schedule_overrides([
        "video.schedules.init.weight=0: 0, 10: 1", "video.schedules.cutn=0: 4, 10: 8", "video.schedules.lr={0: 0.2}"]))
    schedules = motion_schedules(config)
    values = scheduled_values(config, schedules, 5)
    assert values["init.weight"] == 0.5 and values["cutn"] == 6 and isinstance(values["cutn"], int)
    assert values["lr"] == 0.2 and values["video.zoom"] == parse_schedule(config.video.zoom).at(5)
    with pytest.raises(UserError, match="not a numeric config key"):
        motion_schedules(build_config("shapes-zoom", {"video": {"schedules": {"init": {"mode": "0: 1"}}}}))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="0123456789:,. -+eE\t", max_size=40),
                 st.floats(allow_nan=True), st.dictionaries(st.integers(-3, 99), st.floats(), max_size=4)))
def test_the_schedule_parser_gives_a_schedule_or_a_one_line_user_error(spec):
    try:
        schedule = parse_schedule(spec, "video.zoom")
    except UserError as error:
        assert "\n" not in str(error) and str(error).startswith("video.zoom")
    else:
        frames = [frame for frame, _ in schedule.keys]
        assert frames == sorted(set(frames)) and all(math.isfinite(value) for _, value in schedule.keys)
        assert math.isfinite(schedule.at(frames[-1] + 1.5))
