"""Every Python example in README.md and docs/*.md runs as written, as a script in a fresh folder.

The folder holds what the examples say they start from: red.png and blue.png (drawn by the
shapes world). Each example runs in its own interpreter, so a missing import, a renamed
function or an example that needs the `__main__` guard fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vqclip.shapes.world import Scene, draw

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

# What some examples leave behind, beyond running without an error.
WRITES = {
    "README.md-1": ["runs/sweep-py/summary.jsonl", "runs/sweep-py/contact_sheet.png"],
    "batch.md-0": ["runs/sweep-py/summary.jsonl", "runs/best/contact_sheet.png"],
    "video.md-0": ["zoom.mp4", "morph.gif", "styled.mp4"],
}


def examples() -> list:
    return [pytest.param(match.group(1), id=f"{page.name}-{index}") for page in PAGES
            for index, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")))]


def test_the_pages_have_examples():
    names = [param.id for param in examples()]
    assert {"README.md-0", "README.md-1", "batch.md-0", "video.md-0"} <= set(names)
    assert set(WRITES) <= set(names)


@pytest.mark.parametrize("code", examples())
def test_example_runs_as_written(code, tmp_path, request):
    for name, (shape, colour) in {"red.png": ("circle", "red"), "blue.png": ("square", "blue")}.items():
        Image.fromarray(draw(Scene(shape, colour, "white", 0.6, 0.5, 0.5))).save(tmp_path / name)
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{request.node.callspec.id} failed:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    for written in WRITES.get(request.node.callspec.id, []):
        assert (tmp_path / written).is_file(), f"{written} was not written"
