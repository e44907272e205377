"""End to end in a real browser: `vqclip ui` on the shapes world, driven by headless Chromium.

Type a prompt, start, watch the preview update, wait for the final image and judge its pixels;
find it in the gallery; a bad input shows a message, never a traceback. Skipped (with the reason)
where Gradio, Playwright or Debian's Chromium is missing; `.ci/run` installs Chromium.
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


def test_paint_a_mask_on_the_init_image_and_get_an_edited_image(ui, page, tmp_path):
    """Upload a blue square, paint over its right part with the brush, see the region previewed,
    run: the final image keeps every unpainted pixel exactly and changes the painted ones."""
    url, outputs = ui
    start = tmp_path / "blue.png"
    picture = Image.new("RGB", (64, 64), (245, 245, 245))
    picture.paste((30, 70, 220), (8, 18, 28, 46))
    picture.save(start)
    page.goto(url)
    page.locator("#prompts textarea").fill("a red circle")
    fill_number(page, "seed", 1)
    page.locator("#edit").get_by_text("Edit an image").click()
    page.locator("#init-image input[type=file]").set_input_files(str(start))
    page.locator("#init-image canvas").first.wait_for(timeout=30_000)
    page.locator("#init-image button[aria-label='Brush']").first.click()
    canvas = page.locator("#init-image canvas").first.bounding_box()
    for fraction in (0.4, 0.5, 0.6):  # strokes across the right edge of the picture, centred in the canvas
        y = canvas["y"] + canvas["height"] * fraction
        page.mouse.move(canvas["x"] + canvas["width"] * 0.68, y)
        page.mouse.down()
        page.mouse.move(canvas["x"] + canvas["width"] * 0.8, y, steps=8)
        page.mouse.up()
    # The preview shows the painted region in magenta over the dimmed picture.
    deadline, tinted = time.monotonic() + 30, np.zeros((64, 64), dtype=bool)
    while not tinted.any() and time.monotonic() < deadline:
        time.sleep(0.3)
        if src := image_src(page, "mask-preview"):
            shown = fetch_image(page, src).astype(int)
            tinted = (shown[..., 0] > 120) & (shown[..., 2] > 120) & (shown[..., 1] < shown[..., 0] - 60)
    assert tinted[:, 48:].any() and not tinted[:, :8].any()
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
