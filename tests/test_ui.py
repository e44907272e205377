"""The web UI's engine without a browser: the form, the per-device queue, stop/continue, the gallery.

Every run is on the shapes preset with a handful of steps; runs started from the page must give
the same pixels as the same settings through `vqclip.run` (the page is only another way in).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqclip.cli import main
from vqclip.config import build_config, read_yaml
from vqclip.errors import UserError
from vqclip.resources import data_dir
from vqclip.ui import gallery
from vqclip.ui.forms import Form, config_from_form, extra_lines, form_defaults
from vqclip.ui.mask_editor import CANVAS_SIZE, MASK_FOLDER, preview
from vqclip.ui.worker import CANCELLED, DONE, FAILED, STOPPED, Job, Workers

STEPS = 6
PRESETS = data_dir("presets")


@pytest.fixture(scope="module")
def workers():
    pool = Workers()
    yield pool
    pool.close(timeout=60)


def shapes_config(tmp_path, prompt="a red triangle on a black background", **overrides):
    return build_config("shapes", {"prompts": [prompt], "seed": 2, "steps": STEPS, "quiet": True,
                                   "outputs_root": str(tmp_path / "outputs"), **overrides})


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def reference_pixels(config) -> np.ndarray:
    """The same settings through the Python API, into a folder of their own."""
    from vqclip.generation import run

    config = config.copy()
    config.outputs_root = config.outputs_root + "-reference"
    return pixels(run(config).final_path)


# -- the form ---------------------------------------------------------------------------------
def test_form_builds_the_config_the_command_line_would(tmp_path):
    reference = str(tmp_path / "uploads" / "ref.png")
    form = Form(prompts="a red circle:2\n\n fog:-0.5 ", preset="shapes", steps=30.0, width=32, height=48,
                seed=7.0, cutn=8, image_prompts=[reference], image_prompt_weight=0.5,
                extra="# comment\nlr=0.2\ninit.weight=0.5")
    config = config_from_form(form, str(tmp_path / "outputs"), str(tmp_path / "uploads"))
    assert list(config.prompts) == ["a red circle:2", "fog:-0.5"]
    assert (config.steps, list(config.size), config.seed, config.cutn) == (30, [32, 48], 7, 8)
    assert (config.lr, config.init.weight, config.outputs_root) == (0.2, 0.5, str(tmp_path / "outputs"))
    assert list(config.image_prompts) == [f"{reference}:0.5"]
    assert config.vqgan.name == "shapes"
    assert form_defaults("shapes") == {"steps": 30, "width": 64, "height": 64, "seed": None, "cutn": 16}


@pytest.mark.parametrize("changes, message", [
    ({"prompts": "  \n"}, "type a prompt"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"seed": -1}, "seed must be at least 0"),
    ({"width": 64, "height": None}, "both width and height"),
    ({"extra": "lr 0.2"}, "is not key=value"),
    ({"extra": "cutnn=3"}, "unknown config key 'cutnn'"),
    ({"extra": "steps=abc"}, "steps"),
    ({"preset": "nope"}, "unknown preset 'nope'"),
])
def test_bad_form_input_is_one_line_that_names_the_field(tmp_path, changes, message):
    form = Form(**{"prompts": "a red circle", "preset": "shapes", **changes})
    with pytest.raises(UserError, match=message) as caught:
        config_from_form(form, str(tmp_path))
    assert "\n" not in str(caught.value)


def test_the_forms_tile_symmetry_and_palette_fields(tmp_path):
    form = Form(prompts="a red circle", preset="shapes", tile=True, symmetry="both", palette="#dc1e1e, #1e46dc,")
    config = config_from_form(form, str(tmp_path))
    assert config.tile and config.symmetry == "both" and list(config.palette.colours) == ["#dc1e1e", "#1e46dc"]
    plain = config_from_form(Form(prompts="a red circle", preset="shapes"), str(tmp_path))
    assert not plain.tile and plain.symmetry == "none" and list(plain.palette.colours) == []
    with pytest.raises(UserError, match="#dc1e1") as caught:
        config_from_form(Form(prompts="a red circle", preset="shapes", palette="#dc1e1"), str(tmp_path))
    assert "\n" not in str(caught.value)


def test_extra_lines_keep_yaml_values_whole():
    assert extra_lines("clip.models=[{name: shapes, weight: 1.0}]\n") == ["clip.models=[{name: shapes, weight: 1.0}]"]


# -- the worker -------------------------------------------------------------------------------
def test_a_job_previews_every_few_steps_and_ends_like_the_python_api(tmp_path, workers):
    config = shapes_config(tmp_path)
    job = Job(config, preview_every=2)
    seen = []
    original_update = job.update

    def record(**fields):  # runs on the worker thread, in step order
        if "preview" in fields:
            seen.append(fields["preview"].step)
        original_update(**fields)

    job.update = record
    workers.submit(job)
    assert job.wait(timeout=300), job.status
    assert job.status == DONE, job.error
    assert seen == [1, 2, 4, 6]
    assert job.preview.image.size == (64, 64) and job.steps_done == STEPS
    assert np.array_equal(pixels(job.final_path), reference_pixels(config))


class StopAfter(Job):
    """A job whose user presses Stop right after step `after` (on the worker thread: exact)."""

    def __init__(self, config, after: int, **kwargs):
        super().__init__(config, **kwargs)
        self.after = after

    def update(self, **fields):
        super().update(**fields)
        if "preview" in fields and fields["preview"].step >= self.after:
            self.request_stop()


def test_stop_keeps_the_state_and_continue_ends_as_if_never_stopped(tmp_path, workers):
    from vqclip.ui.app import continue_job

    config = shapes_config(tmp_path)
    job = workers.submit(StopAfter(config, after=3, preview_every=1))
    assert job.wait(timeout=300) and job.status == STOPPED, (job.status, job.error)
    assert job.steps_done == 3 and (job.run_dir / "state.pt").is_file()
    stopped = gallery.read_run(job.run_dir / "final.png")
    assert stopped.stopped and stopped.can_continue and "stopped at 3/6" in stopped.caption()

    more = workers.submit(continue_job(job.run_dir, None, preview_every=2))
    assert more.wait(timeout=300) and more.status == DONE, more.error
    assert more.run_dir == job.run_dir and more.steps_done == STEPS
    assert np.array_equal(pixels(more.final_path), reference_pixels(config))
    with pytest.raises(UserError, match="already has 6 steps"):
        continue_job(job.run_dir, 6, preview_every=2)


def test_one_run_at_a_time_per_device_in_order_and_a_queued_job_can_be_cancelled(tmp_path, workers):
    first = workers.submit(Job(shapes_config(tmp_path, seed=1)))
    second = workers.submit(Job(shapes_config(tmp_path, seed=2)))
    third = workers.submit(Job(shapes_config(tmp_path, seed=3)))
    assert workers.position(second) == 1 and workers.position(third) == 2  # jobs ahead of each
    third.request_stop()
    assert second.wait(timeout=300) and third.wait(timeout=300)
    assert first.status == second.status == DONE and third.status == CANCELLED
    assert first.final_path.stat().st_mtime_ns <= second.final_path.stat().st_mtime_ns
    assert len(list((tmp_path / "outputs").glob("*/*/final.png"))) == 2  # the cancelled one wrote nothing


def test_bad_input_found_by_the_run_fails_the_job_with_one_line(tmp_path, workers):
    job = workers.submit(Job(shapes_config(tmp_path, size=[66, 64])))
    assert job.wait(timeout=300) and job.status == FAILED
    assert "size" in job.error and "\n" not in job.error
    assert not list((tmp_path / "outputs").glob("*/*/final.png"))
    with pytest.raises(UserError, match="preview_every"):
        Job(shapes_config(tmp_path), preview_every=0)


def test_a_missing_file_fails_the_job_before_the_models_load(tmp_path, monkeypatch):
    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the paths were checked")

    monkeypatch.setattr("vqclip.loading.load_models", no_models)
    pool = Workers()
    try:
        job = pool.submit(Job(shapes_config(tmp_path, init={"mode": "image", "image": str(tmp_path / "gone.png")})))
        assert job.wait(timeout=60) and job.status == FAILED
    finally:
        pool.close(timeout=60)
    assert job.error == f"init.image: no such file '{tmp_path / 'gone.png'}': check the path"


# -- the gallery ------------------------------------------------------------------------------
def test_gallery_lists_runs_newest_first_and_runs_one_again_with_its_seed(tmp_path, workers):
    outputs = tmp_path / "outputs"
    (outputs / "2026-01-01" / "0001-junk").mkdir(parents=True)
    (outputs / "2026-01-01" / "0001-junk" / "final.png").write_bytes(b"not a png")  # skipped, not fatal
    jobs = [workers.submit(Job(shapes_config(tmp_path, prompt=p))) for p in ("a red circle", "a blue square")]
    assert all(job.wait(timeout=300) and job.status == DONE for job in jobs)
    runs = gallery.find_runs(outputs)
    assert [run.prompts for run in runs] == [["a blue square"], ["a red circle"]]
    assert runs[0].caption() == f"a blue square · seed 2 · {STEPS} steps" and not runs[0].stopped
    assert "seed: 2" in gallery.settings_text(runs[0])

    again = workers.submit(Job(gallery.rerun_config(runs[1], outputs)))
    assert again.wait(timeout=300) and again.status == DONE
    assert again.run_dir != runs[1].run_dir
    assert np.array_equal(pixels(again.final_path), pixels(runs[1].image))
    assert gallery.find_runs(tmp_path / "missing") == []


# -- the image editor's value: the picture the user gave, or a one-line refusal ------------------
def painted_before_the_picture_arrived(folder: Path, colour=(255, 255, 255, 255)) -> dict:
    """The editor's value when the brush was used before the uploaded picture reached its canvas
    (issue 28): its empty canvas as the background (opaque white; dark grey in a dark theme) and
    strokes of the canvas's size."""
    blank, strokes = folder / "background.png", folder / "layer_0.png"
    Image.new("RGBA", CANVAS_SIZE, colour).save(blank)
    layer = Image.new("RGBA", CANVAS_SIZE, (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (540, 300, 640, 500))
    layer.save(strokes)
    return {"background": str(blank), "layers": [str(strokes)], "composite": None}


NOT_YET = r"the init image had not reached the editor when it was painted on \(it sent its blank 800×800 canvas\)"


@pytest.mark.parametrize("colour", [(255, 255, 255, 255), (51, 51, 51, 255)])
def test_an_edit_painted_before_the_picture_reached_the_editor_is_refused(tmp_path, colour):
    """Never an edit of the editor's blank canvas: Start refuses in one line and writes nothing; the
    region preview stays empty. A picture of the user's, even a plain one, is taken."""
    outputs = tmp_path / "outputs"
    value = painted_before_the_picture_arrived(tmp_path, colour)
    with pytest.raises(UserError, match=f"^{NOT_YET}: wait until") as refusal:
        config_from_form(Form(prompts="a red circle", init_image=value), str(outputs), str(tmp_path))
    assert "\n" not in str(refusal.value) and not outputs.exists()
    assert preview(value, False, "") is None
    plain = tmp_path / "plain.png"
    Image.new("RGBA", (64, 64), colour).save(plain)
    config = config_from_form(Form(prompts="a red circle", init_image={**value, "background": str(plain)}),
                              str(outputs), str(tmp_path))
    assert config.init.image == str(plain) and Path(config.mask.image).parent == outputs / MASK_FOLDER


# -- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["ui", "--port", "abc"], ["ui", "--port", "70000"], ["ui", "--preview-every", "0"],
                                  ["ui", "--preset", "nope"]])
def test_ui_command_refuses_bad_arguments_in_one_line(argv, capsys, tmp_path):
    pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")
    assert main([*argv, "--outputs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqclip: error:") and err.count("\n") == 1


def test_only_loopback_addresses_count_as_private():
    from vqclip.ui.app import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


# -- what a page visitor may reach ------------------------------------------------------------
# Anyone who opens the page runs jobs with the server's rights: its settings may name files only in
# the outputs folder or the upload cache, never choose where to write, and beyond loopback it asks
# for a login (vqclip/ui/access.py).
OUTSIDE = "the page only takes files from the outputs folder or uploaded through the page"


@pytest.fixture
def folders(tmp_path):
    """outputs/, uploads/ and a secret file outside both; outputs/link.png leads to the secret."""
    outputs, uploads = tmp_path / "outputs", tmp_path / "uploads"
    outputs.mkdir()
    uploads.mkdir()
    secret = tmp_path / "secret" / "file.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for visitors")
    (outputs / "link.png").symlink_to(secret)
    return outputs, uploads, secret


def form_with(extra: str, **fields) -> Form:
    return Form(prompts="a red circle", preset="shapes", extra=extra, **fields)


@pytest.mark.parametrize("line, key", [
    ("vqgan.checkpoint={secret}", "vqgan.checkpoint"),
    ("vqgan.config={secret}", "vqgan.config"),
    ("init.image={secret}", "init.image"),
    ("init.latent={secret}", "init.latent"),
    ("init.tokens={secret}", "init.tokens"),
    ("init.prior={secret_dir}", "init.prior"),
    ("augmentations={secret}", "augmentations"),
    ("image_prompts=['{secret}:0.5']", "image_prompts"),
    ("clip.models=[{{name: '{secret}.json'}}]", "clip.models[0].name"),
    ("clip.models=[{{name: shapes, pretrained: '{secret}'}}]", "clip.models[0].pretrained"),
    ("init.image={outputs}/../secret/file.png", "init.image"),  # .. leads out of the outputs folder
    ("init.image={outputs}/link.png", "init.image"),  # so does a symlink in it
    ("vqgan.checkpoint=/etc/passwd", "vqgan.checkpoint"),
])
def test_the_page_refuses_files_outside_outputs_and_uploads(folders, line, key):
    outputs, uploads, secret = folders
    line = line.format(secret=secret, secret_dir=secret.parent, outputs=outputs)
    with pytest.raises(UserError) as caught:
        config_from_form(form_with(line), str(outputs), str(uploads))
    assert str(caught.value).startswith(f"{key} ") and OUTSIDE in str(caught.value)


@pytest.mark.parametrize("line", ["run_dir={outside}", "outputs_root={outside}", "output={outside}/x.png",
                                  "run_dir={outputs}/mine"])
def test_the_page_never_chooses_where_to_write(folders, tmp_path, line):
    outputs, uploads, _ = folders
    with pytest.raises(UserError, match="cannot be set from the page") as caught:
        config_from_form(form_with(line.format(outside=tmp_path / "x", outputs=outputs)), str(outputs), str(uploads))
    assert str(caught.value).split()[0] == line.split("=")[0]


def test_the_page_takes_registry_names_and_files_in_outputs_or_uploads(folders):
    outputs, uploads, _ = folders
    lines = [f"init.image={outputs}/2026-01-01/0001-a/../0002-b/final.png", f"image_prompts=['{uploads}/h/ref.png:0.5']",
             f"augmentations={outputs}/mine.yaml", "vqgan.name=shapes", "init.prior=shapes",
             "clip.models=[{name: shapes, weight: 1.0}, {name: ViT-B-32, pretrained: openai}]"]
    config = config_from_form(form_with("\n".join(lines)), str(outputs), str(uploads))
    assert config.init.image == f"{outputs}/2026-01-01/0001-a/../0002-b/final.png"
    assert list(config.image_prompts) == [f"{uploads}/h/ref.png:0.5"]
    assert (config.augmentations, config.vqgan.name, config.init.prior) == (f"{outputs}/mine.yaml", "shapes", "shapes")
    assert [(m.name, m.pretrained) for m in config.clip.models] == [("shapes", None), ("ViT-B-32", "openai")]
    assert config_from_form(form_with("augmentations=classic"), str(outputs)).augmentations == "classic"
    with pytest.raises(UserError, match="image_prompts"):  # without an upload folder, uploads are outside
        config_from_form(form_with(lines[1]), str(outputs))
    with pytest.raises(UserError, match="unknown preset"):  # a preset file is a path too
        config_from_form(Form(prompts="a red circle", preset=str(PRESETS / "shapes.yaml")), str(outputs))


def test_the_gallery_skips_images_that_lead_out_of_the_outputs_folder(folders, tmp_path):
    from vqclip.outputs import save_png

    outputs, _, _ = folders
    black = np.zeros((8, 8, 3), np.uint8)
    for folder, prompt in ((outputs / "2026-01-01" / "0001-inside", "inside"), (tmp_path / "elsewhere" / "0001-x", "out")):
        folder.mkdir(parents=True)
        save_png(folder / "final.png", black, {"config": {"prompts": [prompt], "seed": 1, "steps": 3}, "step": 3})
    (outputs / "2026-01-02" / "0002-link").mkdir(parents=True)
    (outputs / "2026-01-02" / "0002-link" / "final.png").symlink_to(tmp_path / "elsewhere" / "0001-x" / "final.png")
    (outputs / "2026-01-03").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert [run.prompts for run in gallery.find_runs(outputs)] == [["inside"]]


def test_video_keys_and_presets_from_the_page_stay_in_the_outputs_folder(folders):
    pytest.importorskip("vqclip.video")
    from vqclip.ui.video_tab import video_config

    outputs, _, secret = folders
    with pytest.raises(UserError, match=re.escape(f"key 2 '{secret}': {OUTSIDE}")):
        video_config("interpolate", "shapes-morph", ["a red circle", str(secret)], 1, 1, str(outputs))
    with pytest.raises(UserError, match="unknown preset"):
        video_config("animate", str(PRESETS / "shapes-zoom.yaml"), ["a red circle"], 1, 1, str(outputs))
    inside = outputs / "key.png"
    inside.write_bytes(b"")
    config = video_config("interpolate", "shapes-morph", ["a red circle", str(inside)], 1, 1, str(outputs))
    assert config.outputs_root == str(outputs)


# -- the served page, through gradio_client -----------------------------------------------------
def start_form(client, extra: str = "", init_image=None, layers=(), invert=False, outpaint=""):
    """Press Start with 3 steps on the shapes preset; (message, status) as the page shows them.
    `init_image`, `layers`: files for the image editor's background and the layers painted on it."""
    from gradio_client import handle_file

    editor = {"background": handle_file(str(init_image)), "layers": [handle_file(str(layer)) for layer in layers],
              "composite": None} if init_image else None
    return client.predict("a red circle", "shapes", 3, 64, 64, 1, 4, editor, [], 1.0, extra, invert, outpaint,
                          False, "none", "", api_name="/start")


@pytest.fixture(scope="module")
def page(tmp_path_factory, free_port):
    """`vqclip ui` in this process on a free loopback port, with its own upload folder."""
    pytest.importorskip("gradio_client", reason="the ui extra (gradio) is not installed")
    from gradio_client import Client

    from vqclip.ui.app import serve

    root = tmp_path_factory.mktemp("page")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_TEMP_DIR", str(root / "uploads"))  # Gradio's upload folder (read at launch)
        env.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        port = free_port()
        app, pool = serve("127.0.0.1", port, outputs_root=root / "outputs", preview_every=1, block=False)
        try:
            url = f"http://127.0.0.1:{port}/"
            yield url, root / "outputs", root / "uploads", Client(url, verbose=False, download_files=False)
        finally:
            app.close()
            pool.close(timeout=60)


def fetch_status(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_served_page_refuses_run_dir_and_writes_nothing_there(page, tmp_path):
    _, outputs, _, client = page
    target = tmp_path / "x"
    assert start_form(client, f"run_dir={target}") == (
        "Error: run_dir cannot be set from the page: the server writes every run under its outputs folder", "")
    refusal = f"Error: vqgan.checkpoint '/etc/passwd': {OUTSIDE} (use the command line for other files)"
    assert start_form(client, "vqgan.checkpoint=/etc/passwd") == (refusal, "")
    time.sleep(1)  # a job would have made its folder by now; none was submitted
    assert not target.exists() and not list(outputs.glob("*/*"))


def test_served_page_runs_from_an_uploaded_init_image(page, tmp_path):
    _, outputs, uploads, client = page
    red = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(red)
    assert start_form(client, init_image=red) == ("", "waiting")
    status = client.predict(api_name="/watch")[1]  # the job started by this client's Start
    assert status.startswith("done: 3 steps · "), status
    run_dir = Path(status.split(" · ")[1]).parent
    init = read_yaml(run_dir / "config.yaml")["init"]
    uploaded = Path(init["image"])
    assert init["mode"] == "image" and uploaded.resolve().is_relative_to(uploads.resolve())
    assert np.array_equal(np.asarray(Image.open(uploaded).convert("RGB")), np.asarray(Image.open(red)))
    assert run_dir.parent.parent == outputs


def test_served_page_edits_the_painted_region_and_outpaints(page, tmp_path):
    """A layer painted on the init image is the mask (written under outputs/masks); Outpaint grows it."""
    _, outputs, _, client = page
    blue = tmp_path / "blue.png"
    Image.new("RGB", (64, 64), (30, 70, 220)).save(blue)
    strokes = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    strokes.paste((255, 0, 255, 255), (32, 0, 64, 64))
    strokes.save(tmp_path / "layer.png")
    assert start_form(client, init_image=blue, layers=[tmp_path / "layer.png"], outpaint="0 0 0 8") == ("", "waiting")
    status = client.predict(api_name="/watch")[1]
    assert status.startswith("done: 3 steps · "), status
    final = Path(status.split(" · ")[1])
    mask = read_yaml(final.parent / "config.yaml")["mask"]
    assert Path(mask["image"]).parent == outputs / "masks" and mask["outpaint"] == [0, 0, 0, 8]
    painted = np.asarray(Image.open(mask["image"]))
    assert painted[:, 32:].min() == 255 and painted[:, :32].max() == 0
    pixels = np.asarray(Image.open(final).convert("RGB"))
    assert pixels.shape == (72, 64, 3) and (pixels[:64, :32] == (30, 70, 220)).all()  # the kept half, exactly


def test_served_page_refuses_an_edit_painted_before_the_picture_reached_the_editor(page, tmp_path):
    """The value the race sends, through Gradio's own preprocessing: a one-line message, no run, no mask."""
    _, outputs, _, client = page
    value = painted_before_the_picture_arrived(tmp_path)
    before = sorted(outputs.rglob("*"))
    message, status = start_form(client, init_image=value["background"], layers=value["layers"])
    assert re.match(f"^Error: {NOT_YET}: wait until", message) and "\n" not in message and status == ""
    time.sleep(1)  # a job would have made its folder by now; none was submitted
    assert sorted(outputs.rglob("*")) == before


def test_served_file_route_gives_the_outputs_folder_and_nothing_else(page, tmp_path):
    url, outputs, _, _ = page
    mine = outputs / "note.txt"
    mine.write_text("a run's file")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for visitors")
    (outputs / "link.txt").symlink_to(secret)
    route = url + "gradio_api/file="
    assert fetch_status(route + str(mine)) == (200, b"a run's file")
    for path in (secret, outputs / "link.txt", f"{outputs}/../{secret.parent.name}/secret.txt", "/etc/passwd"):
        assert fetch_status(route + str(path))[0] == 403, path


def test_a_login_is_asked_for_when_given(tmp_path, monkeypatch, free_port):
    pytest.importorskip("gradio_client", reason="the ui extra (gradio) is not installed")
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    from vqclip.ui.app import serve

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    port = free_port()
    app, pool = serve("127.0.0.1", port, auth=[("ann", "s3cret")], outputs_root=tmp_path / "outputs", block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        (tmp_path / "outputs" / "note.txt").write_text("a run's file")
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, verbose=False, auth=("ann", "wrong"))
        assert fetch_status(f"{url}gradio_api/file={tmp_path / 'outputs' / 'note.txt'}")[0] == 401
        client = Client(url, verbose=False, auth=("ann", "s3cret"), download_files=False)
        assert client.predict("shapes", api_name="/fill_from_preset") == (30, 64, 64, None, 16, "")
    finally:
        app.close()
        pool.close(timeout=60)


# -- logins on the command line -----------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines open the page"),
    (["--host", "192.168.1.4", "--auth", "ann"], "--auth must be USER:PASS"),
    (["--auth", ":pw"], "--auth must be USER:PASS"),
    (["--auth", "ann:"], "--auth must be USER:PASS"),
    (["--host", "0.0.0.0", "--auth", "ann:pw", "--no-auth"], "contradict each other"),
    (["--auth", "ann:pw", "--auth", "ann:other"], "user 'ann' is given more than once"),
    (["--auth-file", "{missing}"], "cannot read --auth-file"),
    (["--auth-file", "{bad}"], "--auth-file {bad} line 2 must be USER:PASS"),
    (["--auth-file", "{empty}"], "holds no USER:PASS line"),
])
def test_ui_command_refuses_a_network_page_without_a_login_in_one_line(argv, message, capsys, tmp_path):
    files = {"missing": tmp_path / "missing.txt", "bad": tmp_path / "bad.txt", "empty": tmp_path / "empty.txt"}
    files["bad"].write_text("# who may log in\nann s3cret\n")
    files["empty"].write_text("# nobody yet\n\n")
    argv = [arg.format(**files) for arg in argv]
    assert main(["ui", *argv, "--outputs", str(tmp_path / "outputs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqclip: error: ") and err.count("\n") == 1 and message.format(**files) in err
    assert "s3cret" not in err and not (tmp_path / "outputs").exists()  # no password echoed, nothing started


def test_ui_command_exits_2_beyond_loopback_without_a_login(tmp_path):
    command = [sys.executable, "-c", "import sys; from vqclip.cli import main; sys.exit(main())", "ui",
               "--host", "0.0.0.0", "--outputs", str(tmp_path / "outputs")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "add --auth USER:PASS (or --auth-file FILE), or --no-auth" in done.stderr


def test_ui_command_hands_the_logins_to_the_server(monkeypatch, capsys, tmp_path):
    import vqclip.ui.app

    calls = []
    monkeypatch.setattr(vqclip.ui.app, "serve", lambda host, port, **options: calls.append((host, options)))
    users = tmp_path / "users.txt"
    users.write_text("# who may log in\nann:s3cret\n\nbob:pa:ss\n")
    assert main(["ui", "--host", "0.0.0.0", "--auth", "cy:pw", "--auth-file", str(users)]) == 0
    assert calls[-1][1]["auth"] == [("cy", "pw"), ("ann", "s3cret"), ("bob", "pa:ss")]
    assert capsys.readouterr().err == ""
    assert main(["ui", "--host", "0.0.0.0", "--no-auth"]) == 0
    assert calls[-1][1]["auth"] == [] and calls[-1][1]["no_auth"] is True
    assert "without a login (--no-auth)" in capsys.readouterr().err
