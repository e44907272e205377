"""The video commands end to end on the shapes world: animate, interpolate, up-convert, restyle."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from vqclip import video
from vqclip.outputs import load_image
from vqclip.shapes.judge import judge
from vqclip.video.frames import read_settings
from vqclip.video.run_state import decode_latent, encode_image

# Few steps, few frames: each end-to-end test takes seconds on two CPU cores.
TINY = {"steps": 3, "seed": 5, "quiet": True, "cutn": 4}


def read_back(path):
    reader = imageio.get_reader(path)
    try:
        return [np.asarray(frame) for frame in reader], reader.get_meta_data()
    finally:
        reader.close()


def as_uint8(frame: torch.Tensor) -> torch.Tensor:
    return (frame.clamp(0, 1) * 255).round().to(torch.uint8)


def test_animate_writes_an_mp4_with_the_asked_frame_count_and_fps(shapes_models, tmp_path):
    out = tmp_path / "zoom.mp4"
    result = video.animate("a red circle on a white background", preset="shapes-zoom", output=str(out),
                           models=shapes_models, run_dir=str(tmp_path / "run"), **TINY,
                           video={"frames": 5, "fps": 7, "first_frame_steps": 3, "steps_per_frame": 1,
                                  "zoom": "0: 1.0, 4: 1.1", "angle": 4})
    frames, meta = read_back(out)
    assert len(frames) == 5 and len(result.frames) == 5
    assert meta["fps"] == 7.0 and meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert frames[0].shape == (64, 64, 3)
    settings = read_settings(out)
    assert settings["kind"] == "animate" and settings["frames"] == 5 and settings["config"]["video"]["fps"] == 7
    # The same settings ride inside the mp4 (its comment tag), for when the JSON is lost.
    (tmp_path / "zoom.mp4.json").unlink()
    assert read_settings(out)["config"]["video"]["zoom"] == "0: 1.0, 4: 1.1"
    # Each frame has its own generation run: frame 0 the first-frame steps, the others steps_per_frame.
    logs = [(tmp_path / "run" / "frames" / f"{i:05d}" / "log.jsonl").read_text().splitlines() for i in (0, 1)]
    assert [len(log) for log in logs] == [3, 1]


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolating_a_red_circle_to_a_blue_square(shapes_models, tmp_path, method, draw_key):
    red = draw_key(tmp_path / "red.png", "circle", "red")
    blue = draw_key(tmp_path / "blue.png", "square", "blue")
    result = video.interpolate([str(red), str(blue)], preset="shapes-morph", output=str(tmp_path / "morph"),
                               models=shapes_models, run_dir=str(tmp_path / "run"), **TINY,
                               video={"between": 12, "method": method, "ease": "linear"})
    frames = torch.stack(result.frames)
    assert len(frames) == 14 and len(list((tmp_path / "morph").glob("*.png"))) == 14

    # The ends are the keys' VQGAN reconstructions, pixel for pixel.
    vqgan = shapes_models.vqgan
    for key, frame in ((red, frames[0]), (blue, frames[-1])):
        reconstruction = decode_latent(vqgan, encode_image(vqgan, load_image(key)[0], shapes_models.device))
        assert torch.equal(as_uint8(reconstruction), as_uint8(frame))

    # Smooth: no step between neighbours comes near the whole change (a hard cut would be all of it).
    steps = (frames[1:] - frames[:-1]).abs().mean((1, 2, 3))
    whole = (frames[-1] - frames[0]).abs().mean()
    assert steps.max() < 0.4 * whole, (steps.tolist(), float(whole))

    # The judged colour goes from red to blue, and once blue stays blue.
    colours = [judge(frame).colour for frame in frames]
    assert colours[0] == "red" and colours[-1] == "blue"
    first_blue = colours.index("blue")
    assert "red" not in colours[first_blue:] and set(colours[first_blue:]) == {"blue"}, colours
    # The shape's red-minus-blue falls all the way (measured inside the circle's middle).
    middle = frames[:, :, 28:36, 28:36].mean((2, 3))
    redness = (middle[:, 0] - middle[:, 2]).tolist()
    assert redness[0] > 0.5 and redness[-1] < -0.5
    assert all(later <= earlier + 0.02 for earlier, later in zip(redness, redness[1:])), redness


def test_lerp_and_slerp_differ_between_the_keys_and_agree_at_them(shapes_models, tmp_path, draw_key):
    red = draw_key(tmp_path / "red.png", "circle", "red")
    blue = draw_key(tmp_path / "blue.png", "square", "blue")
    made = {method: video.interpolate([str(red), str(blue)], preset="shapes-morph", models=shapes_models,
                                      output=str(tmp_path / f"{method}.gif"), run_dir=str(tmp_path / method),
                                      **TINY, video={"between": 3, "method": method})
            for method in ("lerp", "slerp")}
    lerp_frames, slerp_frames = made["lerp"].frames, made["slerp"].frames
    assert torch.equal(lerp_frames[0], slerp_frames[0]) and torch.equal(lerp_frames[-1], slerp_frames[-1])
    assert (lerp_frames[2] - slerp_frames[2]).abs().max() > 0.01
    frames, meta = read_back(tmp_path / "slerp.gif")
    assert len(frames) == 5 and meta["duration"] == 100  # 10 fps in shapes-morph


def test_up_conversion_of_an_8_frame_clip_gives_15_frames(shapes_models, tmp_path, write_clip):
    clip = write_clip(tmp_path / "clip.mp4", 8)
    result = video.interpolate([str(clip)], preset="shapes-morph", output=str(tmp_path / "smooth.mp4"),
                               models=shapes_models, run_dir=str(tmp_path / "run"), **TINY,
                               video={"between": 1, "fps": 16})
    frames, meta = read_back(tmp_path / "smooth.mp4")
    assert len(result.frames) == 15 and len(frames) == 15 and meta["fps"] == 16.0
    # Each inserted frame lies between its neighbours: the circle's centre of redness moves on.
    def centre(frame: torch.Tensor) -> float:
        redness = (frame[0] - frame[2]).clamp_min(0).sum(0)
        return float((redness * torch.arange(64)).sum() / redness.sum())
    xs = [centre(frame) for frame in result.frames]
    assert all(a < b for a, b in zip(xs, xs[1:])), xs


def test_restyle_keeps_the_frame_count_and_size(shapes_models, tmp_path, write_clip):
    clip = write_clip(tmp_path / "clip.gif", 3)
    result = video.restyle(str(clip), "a blue square", preset="shapes-zoom", output=str(tmp_path / "styled.mp4"),
                           models=shapes_models, run_dir=str(tmp_path / "run"), **TINY,
                           init={"weight": 1.0}, video={"first_frame_steps": 2, "steps_per_frame": 1})
    frames, _ = read_back(tmp_path / "styled.mp4")
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert len(result.frames) == 3 and tuple(result.frames[0].shape) == (3, 64, 64)
    job = json.loads((tmp_path / "run" / "job.json").read_text())
    assert job == {"kind": "restyle", "inputs": [str(clip)]}


def test_guided_in_betweens_take_clip_steps_toward_the_blend(shapes_models, tmp_path, draw_key):
    red = draw_key(tmp_path / "red.png", "circle", "red")
    blue = draw_key(tmp_path / "blue.png", "square", "blue")
    kwargs = dict(preset="shapes-morph", models=shapes_models, **TINY)
    plain = video.interpolate([str(red), str(blue)], run_dir=str(tmp_path / "plain"), video={"between": 2}, **kwargs)
    guided = video.interpolate([str(red), str(blue)], run_dir=str(tmp_path / "guided"),
                               video={"between": 2, "guided_steps": 2}, **kwargs)
    assert torch.equal(plain.frames[0], guided.frames[0]) and torch.equal(plain.frames[-1], guided.frames[-1])
    assert (plain.frames[1] - guided.frames[1]).abs().max() > 0.01
    log = (tmp_path / "guided" / "frames" / "00001" / "log.jsonl").read_text().splitlines()
    assert len(log) == 2 and "image" in log[0]  # the image keys pull as image prompts
    assert not (tmp_path / "plain" / "frames" / "00001").exists()  # plain in-betweens need no run


def test_keys_can_be_images_prompts_latents_and_run_states(shapes_models, tmp_path, draw_key):
    from vqclip.outputs import save_latent

    vqgan = shapes_models.vqgan
    red = draw_key(tmp_path / "red.png", "circle", "red")
    blue = encode_image(vqgan, load_image(draw_key(tmp_path / "blue.png", "square", "blue"))[0], shapes_models.device)
    save_latent(tmp_path / "blue.pt", blue)
    keys = [str(red), "a blue square on a white background", str(tmp_path / "blue.pt")]
    result = video.interpolate(keys, preset="shapes-morph", models=shapes_models, run_dir=str(tmp_path / "run"),
                               **TINY, video={"between": 1})
    assert len(result.frames) == 5
    prompt_run = tmp_path / "run" / "keys" / "00001"
    assert len((prompt_run / "log.jsonl").read_text().splitlines()) == TINY["steps"]  # the prompt was generated
    assert torch.equal(as_uint8(result.frames[-1]), as_uint8(decode_latent(vqgan, blue)))
    # The prompt key's run state works as a key too, and gives that key's picture.
    again = video.interpolate([str(prompt_run / "state.pt"), str(red)], preset="shapes-morph", models=shapes_models,
                              run_dir=str(tmp_path / "again"), **TINY, video={"between": 1})
    assert torch.equal(again.frames[0], result.frames[2])


def test_shapes_presets_start_where_the_main_command_starts(shapes_models, tmp_path, draw_key):
    """shapes-zoom's frame 0 and a shapes-morph prompt key are `vqclip PROMPT --preset shapes`'s
    picture: from the shipped prior, not random codes (which the tiny CLIP paints as textures)."""
    from vqclip.generation import generate

    prompt, seed = "a red circle on a white background", 1
    main = generate(prompt, preset="shapes", models=shapes_models, seed=seed, quiet=True, run_dir=str(tmp_path / "main"))
    drawn = judge(main.images[0])
    assert (drawn.colour, drawn.shape, drawn.background) == ("red", "circle", "white")

    zoom = video.animate(prompt, preset="shapes-zoom", models=shapes_models, seed=seed, quiet=True,
                         run_dir=str(tmp_path / "zoom"), output=str(tmp_path / "zoom.gif"), video={"frames": 1})
    first = judge(zoom.frames[0])
    assert (first.colour, first.shape, first.background) == ("red", "circle", "white")
    assert torch.equal(as_uint8(zoom.frames[0]), as_uint8(main.images[0]))

    blue = draw_key(tmp_path / "blue.png", "square", "blue")
    morph = video.interpolate([prompt, str(blue)], preset="shapes-morph", models=shapes_models, seed=seed, quiet=True,
                              run_dir=str(tmp_path / "morph"), video={"between": 1})
    assert torch.equal(as_uint8(morph.frames[0]), as_uint8(main.images[0]))


def test_a_morph_changes_the_picture_evenly_from_frame_to_frame(shapes_models, tmp_path, draw_key):
    """A red circle to a blue square with 6 in-betweens: 8 frames, each step about a seventh of the
    way. Placed evenly in t, one frame popped (73 % of the whole change in one step)."""
    red = draw_key(tmp_path / "red.png", "circle", "red")
    blue = draw_key(tmp_path / "blue.png", "square", "blue")
    result = video.interpolate([str(red), str(blue)], preset="shapes-morph", models=shapes_models,
                               run_dir=str(tmp_path / "run"), quiet=True, video={"between": 6})
    frames = torch.stack(result.frames)
    steps = (frames[1:] - frames[:-1]).abs().mean((1, 2, 3))
    whole = (frames[-1] - frames[0]).abs().mean()
    # Measured 18-19 % each: the picture's way is a little longer than the straight line (1.31×).
    assert len(frames) == 8 and steps.max() < 0.22 * whole, (steps / whole).tolist()
    assert steps.max() < 1.15 * steps.min(), (steps / whole).tolist()
    vqgan = shapes_models.vqgan  # the keys themselves stay exact
    for key, frame in ((red, frames[0]), (blue, frames[-1])):
        reconstruction = decode_latent(vqgan, encode_image(vqgan, load_image(key)[0], shapes_models.device))
        assert torch.equal(as_uint8(reconstruction), as_uint8(frame))


def test_restyle_keeps_the_input_fps_unless_one_is_asked(shapes_models, tmp_path, monkeypatch, capsys, write_clip):
    from vqclip.cli import main

    clip = write_clip(tmp_path / "clip.mp4", 3, fps=12)
    settings = dict(models=shapes_models, **TINY, init={"weight": 1.0},
                    video={"first_frame_steps": 1, "steps_per_frame": 1})
    kept = video.restyle(str(clip), "a blue square", preset="shapes-zoom", output=str(tmp_path / "kept.mp4"),
                         run_dir=str(tmp_path / "kept"), **settings)
    assert kept.fps == 12.0 and read_back(tmp_path / "kept.mp4")[1]["fps"] == 12.0  # shapes-zoom says 8
    assert "fps: 12.0" in (tmp_path / "kept" / "config.yaml").read_text()  # --resume writes the same
    asked = video.restyle(str(clip), "a blue square", preset="shapes-zoom", output=str(tmp_path / "asked.gif"),
                          run_dir=str(tmp_path / "asked"), dotlist=["video.fps=5"], **settings)
    assert asked.fps == 5.0 and read_back(tmp_path / "asked.gif")[1]["duration"] == 200
    # On the command line, --fps is the one given.
    monkeypatch.setattr("vqclip.loading.load_models", lambda *args, **kwargs: shapes_models)
    status = main(["video", "restyle", str(clip), "a blue square", "-p", "shapes-zoom", "--fps", "6", "--quiet",
                   "--seed", "5", "cutn=4", "steps=3", "video.first_frame_steps=1", "video.steps_per_frame=1",
                   "-o", str(tmp_path / "cli.mp4"), "--run-dir", str(tmp_path / "cli")])
    assert status == 0, capsys.readouterr().err
    assert read_back(tmp_path / "cli.mp4")[1]["fps"] == 6.0


def test_a_batch_restyle_job_keeps_the_input_fps_too(tmp_path, write_clip):
    import vqclip.batch

    clip = write_clip(tmp_path / "clip.mp4", 2, fps=12)
    job = {"kind": "video", "command": "restyle", "input": str(clip), "prompt": "a blue square",
           "preset": "shapes-zoom", "seed": 5, "steps": 3, "cutn": 4, "format": "mp4",
           "video": {"first_frame_steps": 1, "steps_per_frame": 1}}
    results = list(vqclip.batch.run({"jobs": [job, {**job, "fps": 5}]}, tmp_path / "out", threads=1))
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    assert [read_back(r.files[0])[1]["fps"] for r in results] == [12.0, 5.0]
