"""Helpers for the web UI tests: what they need installed, a free port, the app in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(outputs: Path, log_path: Path, *extra_args: str) -> tuple[subprocess.Popen, str]:
    """`vqclip ui` on a free loopback port, in its own process; returns it and its URL once it answers."""
    port = free_port()
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
