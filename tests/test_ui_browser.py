"""End to end in a real browser: `vqclip ui` on the shapes world, driven by headless Chromium.

Type a prompt, start, watch the preview update, wait for the final image and judge its pixels;
find it in the gallery; a bad input shows a message, never a traceback. Paint a mask on an init
image and get the edit; with the picture held back, see Start refuse the editor's blank canvas
(issue 28). Skipped (with the reason) where Gradio, Playwright or Debian's Chromium is missing;
`.ci/run` installs Chromium.
Set VQCLIP_UI_SCREENSHOT=docs/ui.png to also write the README's screenshot.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    """Debian's Chromium (the only browser the tests use: no test tool may download one)."""
    override = os.environ.get("VQCLIP_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_for_browser_test() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    for module, extra in (("gradio", "ui"), ("playwright", "test")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install '.[{extra}]')"
    if find_chromium() is None:
        return ("Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
                "or set VQCLIP_CHROMIUM to a Chromium binary)")
    return None


def start_ui(port: int, outputs: Path, log_path: Path, *extra_args: str) -> tuple[subprocess.Popen, str]:
    """`vqclip ui` on loopback `port`, in its own process; returns it and its URL once it answers."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vqclip.cli import main; sys.exit(main())", "ui",
         "--port", str(port), "--outputs", str(outputs), *extra_args],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vqclip ui exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
    stop_ui(process)
    raise RuntimeError(f"vqclip ui did not answer at {url} within 120 s:\n{log_path.read_text()}")


def stop_ui(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


missing = missing_for_browser_test()
pytestmark = pytest.mark.skipif(missing is not None, reason=f"browser test: {missing}")

# The shapes preset draws this prompt's colour and background right with this seed in 40 steps (and,
# with the engine of 2026-11-22 09:15, its shape too; the shape is not asserted: the shapes world's
# generation gets shapes right rarely (README), and the engine's numerics change as it is sped up).
PROMPT, SEED, STEPS = "a red triangle on a black background", 2, 40
RUN_TIMEOUT_S = 300  # generous: CI machines are slow and shared; the run itself takes seconds


@pytest.fixture
def ui(tmp_path, free_port):
    outputs = tmp_path / "outputs"
    process, url = start_ui(free_port(), outputs, tmp_path / "ui.log", "--preview-every", "2")
    try:
        yield url, outputs
    finally:
        stop_ui(process)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 860})
        finally:
            browser.close()


def fill_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")  # Gradio takes the value on input and blur


def image_src(page, elem_id: str) -> str | None:
    images = page.locator(f"#{elem_id} img")
    return images.first.get_attribute("src") if images.count() else None


def fetch_image(page, src: str) -> np.ndarray:
    answer = page.request.get(src)
    assert answer.ok, f"GET {src} -> {answer.status}"
    return np.asarray(Image.open(io.BytesIO(answer.body())).convert("RGB"))


def wait_for_text(page, elem_id: str, pattern: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = page.locator(f"#{elem_id}").inner_text()
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    page.screenshot(path=os.environ.get("VQCLIP_UI_FAILURE_SHOT", "/tmp/vqclip-ui-failure.png"))
    raise AssertionError(f"#{elem_id} never matched {pattern!r}; last text: {text!r}; "
                         f"status {page.locator('#status').inner_text()!r}, steps "
                         f"{page.locator('#steps input').input_value()!r}")


def test_generate_preview_final_gallery_and_bad_input(ui, page):
    from vqclip.shapes import judge

    url, outputs = ui
    # The same settings from the command line, in parallel: the page must give the same pixels.
    reference = outputs.parent / "reference.png"
    command_line = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vqclip.cli import main; sys.exit(main())", PROMPT, "-p", "shapes",
         "--seed", str(SEED), "--steps", str(STEPS), "--quiet", "-o", str(reference),
         f"outputs_root={outputs.parent / 'reference-runs'}"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    page.goto(url)
    page.locator("#prompts textarea").fill(PROMPT)
    fill_number(page, "seed", SEED)
    fill_number(page, "steps", STEPS)
    page.locator("#start").click()

    # The preview updates while the run goes on: several step numbers and preview images are seen.
    steps_seen, previews_seen = set(), set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while image_src(page, "final") is None:
        status = page.locator("#status").inner_text()
        assert time.monotonic() < deadline and status != "failed", \
            f"no final image; status {status!r}, message {page.locator('#message').inner_text()!r}"
        if match := re.search(rf"step (\d+)/{STEPS}", status):
            steps_seen.add(int(match.group(1)))
        if src := image_src(page, "preview"):
            previews_seen.add(src)
        time.sleep(0.05)
    assert len(steps_seen) >= 2 and len(previews_seen) >= 2, (steps_seen, previews_seen)
    assert max(steps_seen) < STEPS or len(steps_seen) >= 3
    status = wait_for_text(page, "status", rf"done: {STEPS} steps")

    # The final image on the page is the run's final.png, pixel for pixel, and shows the prompt.
    shown = fetch_image(page, image_src(page, "final"))
    finals = list(outputs.glob("*/*/final.png"))
    assert len(finals) == 1 and str(finals[0].name) in status
    assert np.array_equal(shown, np.asarray(Image.open(finals[0]).convert("RGB")))
    verdict = judge.judge(shown)
    scores = judge.score_against(verdict, PROMPT)
    assert scores["colour"] and scores["background"], verdict
    log, _ = command_line.communicate(timeout=RUN_TIMEOUT_S)
    assert command_line.returncode == 0, log.decode(errors="replace")
    assert np.array_equal(shown, np.asarray(Image.open(reference).convert("RGB")))
    if os.environ.get("VQCLIP_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["VQCLIP_UI_SCREENSHOT"])

    # The gallery lists it with its settings.
    page.get_by_role("tab", name="Past runs").click()
    gallery = page.locator("#gallery")
    gallery.locator("img").first.wait_for(timeout=30_000)
    assert gallery.locator("img").count() == 1
    gallery.locator("img").first.click()
    wait_for_text(page, "settings", re.escape(PROMPT), 30)
    assert f"seed: {SEED}" in page.locator("#settings").inner_text()

    # Bad input: a message on the page, in one line, never a traceback; nothing new is written.
    page.get_by_role("tab", name="Generate").click()
    fill_number(page, "steps", 0)
    page.locator("#start").click()
    wait_for_text(page, "message", r"Error: steps must be at least 1", 30)
    time.sleep(1)  # the message stays (a watcher with nothing to watch leaves the page alone)
    assert "steps must be at least 1" in page.locator("#message").inner_text()
    assert image_src(page, "final") is not None
    fill_number(page, "steps", 4)
    fill_number(page, "width", 66)  # not a multiple of the shapes VQGAN's factor 4: found by the run
    page.locator("#start").click()
    message = wait_for_text(page, "message", r"Error: .*size", 120)
    assert "\n" not in message.strip()
    assert "Traceback" not in page.content()
    assert list(outputs.glob("*/*/final.png")) == finals


# The browser decodes an uploaded picture onto the editor's canvas itself (createImageBitmap on the
# File; no request to the server that page.route could hold). This holds that decoding until the
# test calls window.releasePicture(): the brush then paints on the editor's empty canvas, which is
# the race of issue 28 made certain.
HOLD_THE_PICTURE = """
(() => {
  let release;
  const gate = new Promise(resolve => { release = resolve; });
  window.releasePicture = release;
  window.pictureHeld = false;
  const decode = window.createImageBitmap.bind(window);
  window.createImageBitmap = async (source, ...rest) => {
    if (source instanceof Blob) { window.pictureHeld = true; await gate; }
    return decode(source, ...rest);
  };
})();
"""


def blue_square(folder: Path) -> Path:
    path = folder / "blue.png"
    picture = Image.new("RGB", (64, 64), (245, 245, 245))
    picture.paste((30, 70, 220), (8, 18, 28, 46))
    picture.save(path)
    return path


def open_the_editor(page, url: str, picture: Path) -> None:
    page.goto(url)
    page.locator("#prompts textarea").fill("a red circle")
    fill_number(page, "seed", 1)
    page.locator("#edit").get_by_text("Edit an image").click()
    # The editor drops a file given before its canvas is set up; its tools show once it is.
    page.locator("#init-image button[aria-label='Brush']").first.wait_for(timeout=60_000)
    page.locator("#init-image input[type=file]").set_input_files(str(picture))


def wait_until_the_picture_shows(page, timeout_s: float = 60) -> None:
    """What a user waits for before painting: the blue square drawn on the editor's canvas."""
    deadline = time.monotonic() + timeout_s
    while True:
        shot = np.asarray(Image.open(io.BytesIO(page.locator("#init-image canvas").first.screenshot())).convert("RGB"))
        blue = (shot[..., 2] > 180) & (shot[..., 0] < 80) & (shot[..., 1] < 110)
        if blue.sum() > 100:
            return
        if time.monotonic() > deadline:
            page.screenshot(path=os.environ.get("VQCLIP_UI_FAILURE_SHOT", "/tmp/vqclip-ui-failure.png"))
            raise AssertionError("the uploaded picture never showed in the editor")
        time.sleep(0.2)


def paint_over_the_right_edge(page) -> None:
    """Brush strokes across the right edge of the picture (centred in the canvas)."""
    page.locator("#init-image button[aria-label='Brush']").first.click()
    canvas = page.locator("#init-image canvas").first.bounding_box()
    for fraction in (0.4, 0.5, 0.6):
        y = canvas["y"] + canvas["height"] * fraction
        page.mouse.move(canvas["x"] + canvas["width"] * 0.68, y)
        page.mouse.down()
        page.mouse.move(canvas["x"] + canvas["width"] * 0.8, y, steps=8)
        page.mouse.up()


def tinted(shown: np.ndarray) -> np.ndarray:
    """Where the region preview shows magenta: the region to change."""
    shown = shown.astype(int)
    return (shown[..., 0] > 120) & (shown[..., 2] > 120) & (shown[..., 1] < shown[..., 0] - 60)


def wait_for_painted_region(page, size: tuple[int, int], timeout_s: float = 60) -> np.ndarray:
    """Where the region preview shows the painted region, once it shows one on a picture of `size`
    (height, width): the server has the strokes on that picture."""
    deadline, shown = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if src := image_src(page, "mask-preview"):
            shown = fetch_image(page, src)
            if shown.shape[:2] == size and tinted(shown).any():
                return tinted(shown)
        time.sleep(0.2)
    raise AssertionError(f"the region preview never showed a region painted on a {size} picture; "
                         f"last: {None if shown is None else shown.shape}")


def test_paint_a_mask_on_the_init_image_and_get_an_edited_image(ui, page, tmp_path):
    """Upload a blue square, wait until it shows, paint over its right part with the brush, see the
    region previewed, run: the final image keeps every unpainted pixel exactly and changes the painted ones."""
    url, outputs = ui
    start = blue_square(tmp_path)
    open_the_editor(page, url, start)
    wait_until_the_picture_shows(page)
    paint_over_the_right_edge(page)
    region = wait_for_painted_region(page, (64, 64))
    assert region[:, 48:].any() and not region[:, :8].any()
    page.locator("#start").click()
    wait_for_text(page, "status", r"done: 30 steps", RUN_TIMEOUT_S)

    finals = list(outputs.glob("*/*/final.png"))
    assert len(finals) == 1
    config = yaml.safe_load((finals[0].parent / "config.yaml").read_text())
    painted = np.asarray(Image.open(config["mask"]["image"])) > 127
    assert painted.shape == (64, 64) and 0 < painted.mean() < 0.6
    assert painted[:, 48:].any() and not painted[:, :8].any()
    edited = fetch_image(page, image_src(page, "final")).astype(int)
    original = np.asarray(Image.open(start)).astype(int)
    assert np.array_equal(edited[~painted], original[~painted])
    assert np.abs(edited[painted] - original[painted]).mean() > 10


def test_painting_before_the_picture_reaches_the_editor_is_refused_not_run_on_a_blank(ui, page, tmp_path):
    """Issue 28: the picture is held back while the brush paints on the editor's empty canvas; Start
    then says so in one line and starts nothing (it used to run on a blank white 800×800 picture).
    Once the picture shows, painting again is taken, on the picture."""
    url, outputs = ui
    page.add_init_script(HOLD_THE_PICTURE)
    start = blue_square(tmp_path)
    open_the_editor(page, url, start)
    deadline = time.monotonic() + 30
    while not page.evaluate("window.pictureHeld"):  # polled: page.wait_for_function never saw it here
        assert time.monotonic() < deadline, "the editor never started to decode the picture"
        time.sleep(0.1)
    paint_over_the_right_edge(page)
    page.locator("#start").click()
    deadline = time.monotonic() + 60
    while True:  # until Start refuses or a run starts (the page shows a timer while Start is handled)
        message = page.locator("#message").inner_text().strip()
        status = page.locator("#status").inner_text().strip()
        if message.startswith("Error:") or re.match(r"waiting|loading|step|done|failed", status):
            break
        assert time.monotonic() < deadline, f"Start neither refused nor started a run: {message!r}, {status!r}"
        time.sleep(0.1)
    assert message.startswith("Error: the init image had not reached the editor"), f"{message!r}, status {status!r}"
    assert "\n" not in message and page.locator("#status").inner_text().strip() == ""
    assert image_src(page, "mask-preview") is None  # no region is shown on the blank canvas
    time.sleep(1)  # a run would have made its folder by now
    assert not list(outputs.glob("*/*")) and not (outputs / "masks").exists()

    page.evaluate("window.releasePicture()")
    wait_until_the_picture_shows(page)  # as the message says: wait for it, then paint again
    paint_over_the_right_edge(page)
    region = wait_for_painted_region(page, (64, 64))
    assert region[:, 48:].any() and not region[:, :8].any()
    fill_number(page, "steps", 2)
    page.locator("#start").click()
    wait_for_text(page, "status", r"done: 2 steps", RUN_TIMEOUT_S)
    finals = list(outputs.glob("*/*/final.png"))
    assert len(finals) == 1 and page.locator("#message").inner_text().strip() == ""
    config = yaml.safe_load((finals[0].parent / "config.yaml").read_text())
    assert np.array_equal(np.asarray(Image.open(config["init"]["image"]).convert("RGB")), np.asarray(Image.open(start)))
    painted = np.asarray(Image.open(config["mask"]["image"])) > 127
    assert painted.shape == (64, 64) and painted[:, 48:].any() and not painted[:, :8].any()
