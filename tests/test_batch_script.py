"""Batches with worker processes from a user's script: the missing __main__ guard is one clear line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

JOBS = '[{"prompt": "a red circle", "preset": "shapes", "steps": 1}] * 2'


def run_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "taken").write_text("a file where the batch folder should go")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body).format(jobs=JOBS))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("body", [
    """
    import vqclip
    for result in vqclip.batch.run({jobs}, out="taken", workers=2):
        print(result.status)
    """,
    """
    import vqclip

    def main():
        return list(vqclip.batch.run({jobs}, out="taken", workers=2))

    main()
    """,
], ids=["top-level", "in-a-function"])
def test_a_script_without_the_guard_is_told_how_to_fix_it(tmp_path, body):
    result = run_script(tmp_path, body)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert 'starts worker processes that import script.py again: put the code that runs the batch under ' \
           '`if __name__ == "__main__":`' in last
    assert "BrokenProcessPool" not in result.stderr


def test_a_guarded_script_passes_the_check(tmp_path):
    # The guard is found (in either spelling); the next check, the taken --out, is what stops it.
    result = run_script(tmp_path, """
    import vqclip

    def main():
        return list(vqclip.batch.run({jobs}, out="taken", workers=2))

    if "__main__" == __name__:
        main()
    """)
    assert result.returncode == 1
    assert "--out taken is a file" in result.stderr.strip().splitlines()[-1]
