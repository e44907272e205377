"""vqclip.models.download against a local HTTP server whose misbehaviour each test chooses.

Everything runs on 127.0.0.1 and in tmp_path; nothing reaches the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vqclip.errors import UserError
from vqclip.models import download as dl
from vqclip.models.download import DownloadError, cache_dir, download, sha256_of

DATA = random.Random(0).randbytes(3 * dl.CHUNK_BYTES + 12345)  # several chunks, a ragged end
DATA_SHA = hashlib.sha256(DATA).hexdigest()
HTML = b"<!DOCTYPE html><html><body>Sorry, this file is gone.</body></html>"


@dataclasses.dataclass
class Behaviour:
    """What the server does; 'first' options apply to the first request only."""

    data: bytes = DATA
    content_type: str = "application/octet-stream"
    status: int = 200  # anything but 200 is sent as an error with no body
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    cut_first_after: int | None = None  # first request: send this many bytes, then hang up
    stall_first_after: int | None = None  # first request: send this many bytes, then go silent
    stall: bool = False  # every request: send nothing at all
    gate: threading.Event | None = None  # first request: wait for this before answering


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            index = len(server.requests)
            server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        b = server.behaviour
        try:
            self._answer(b, first=index == 0, index=index)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: that is the test
            pass

    def _answer(self, b: Behaviour, first: bool, index: int):
        server = self.server
        if first and b.gate is not None:
            b.gate.wait(30)
        if b.stall:
            server.release.wait(30)
            return
        if b.status != 200:
            self.send_error(b.status)
            return
        data, status, start = b.data, 200, 0
        wanted = self.headers.get("Range")
        if wanted and not b.ignore_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                # Record before answering: once end_headers() sends this bodiless answer, the
                # client may return and the test may read `statuses` before this thread runs on.
                server.statuses.append(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        server.statuses.append(status)  # before answering, as above
        self.send_response(status)
        self.send_header("Content-Type", b.content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if first and b.cut_first_after is not None:
            self.wfile.write(body[: b.cut_first_after])
            self.wfile.flush()
            self.close_connection = True  # HTTP/1.0: returning closes the socket mid-body
            return
        if first and b.stall_first_after is not None:
            self.wfile.write(body[: b.stall_first_after])
            self.wfile.flush()
            server.release.wait(30)
            return
        self.wfile.write(body)


class Server:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.behaviour = Behaviour()
        self.httpd.requests = []
        self.httpd.statuses = []
        self.httpd.lock = threading.Lock()
        self.httpd.release = threading.Event()  # frees stalled handlers at teardown
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def behaviour(self) -> Behaviour:
        return self.httpd.behaviour

    @property
    def requests(self) -> list[dict]:
        return self.httpd.requests

    @property
    def statuses(self) -> list[int]:
        return self.httpd.statuses

    def url(self, name: str = "model.ckpt") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.release.set()
        if self.behaviour.gate is not None:
            self.behaviour.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_PAUSE_S", 0.0)


def leftovers(folder: Path) -> list[str]:
    """Files other than the lock file (which stays by design)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# --- the happy path -------------------------------------------------------------------------


def test_downloads_verifies_and_then_uses_the_cached_file(server, tmp_path):
    dest = tmp_path / "sub" / "model.ckpt"
    got = download(server.url(), dest, sha256=DATA_SHA.upper(), size=len(DATA), progress=False)
    assert got == dest and dest.read_bytes() == DATA
    assert leftovers(dest.parent) == ["model.ckpt"]
    assert len(server.requests) == 1 and server.requests[0]["range"] is None

    again = download(server.url(), str(dest), sha256=DATA_SHA, size=len(DATA), progress=False)
    assert again == dest and len(server.requests) == 1  # no network the second time


def test_cached_file_without_known_hash_is_used_as_is(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    dest.write_bytes(b"whatever the user put here")
    assert download(server.url(), dest, progress=False) == dest
    assert server.requests == []


def test_existing_file_that_does_not_match_is_replaced(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    dest.write_bytes(b"an older, different version")
    download(server.url(), dest, sha256=DATA_SHA, progress=False)
    assert dest.read_bytes() == DATA and len(server.requests) == 1


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    download(server.url(), tmp_path / "model.ckpt", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "model.ckpt" in err


def test_sha256_of_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    assert sha256_of(path) == DATA_SHA
    assert sha256_of(path, chunk_bytes=7) == DATA_SHA


def test_cache_dir_from_env_or_home_and_not_created(monkeypatch, tmp_path):
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("VQCLIP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "vqclip"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "home").exists()


def test_download_into_the_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    got = download(server.url(), cache_dir() / "vqgan" / "model.ckpt", size=len(DATA), progress=False)
    assert got == tmp_path / "cache" / "vqgan" / "model.ckpt" and got.read_bytes() == DATA


# --- resuming -------------------------------------------------------------------------------


def test_resumes_after_a_cut_connection(server, tmp_path):
    cut = dl.CHUNK_BYTES + 1000
    server.behaviour.cut_first_after = cut
    dest = tmp_path / "model.ckpt"
    download(server.url(), dest, sha256=DATA_SHA, size=len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [None, f"bytes={cut}-"]
    assert server.statuses == [200, 206]  # the second answer carried only the rest
    assert leftovers(tmp_path) == ["model.ckpt"]


def test_cut_without_retries_keeps_the_part_and_the_next_run_resumes(server, tmp_path):
    cut = 5000
    server.behaviour.cut_first_after = cut
    dest = tmp_path / "model.ckpt"
    with pytest.raises(DownloadError, match="resumes") as info:
        download(server.url(), dest, size=len(DATA), progress=False, retries=0)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert (tmp_path / "model.ckpt.part").read_bytes() == DATA[:cut]

    download(server.url(), dest, sha256=DATA_SHA, progress=False)
    assert dest.read_bytes() == DATA and server.requests[-1]["range"] == f"bytes={cut}-"


def test_resumes_after_a_stall_mid_body(server, tmp_path):
    server.behaviour.stall_first_after = 4000
    dest = tmp_path / "model.ckpt"
    download(server.url(), dest, sha256=DATA_SHA, timeout=0.3, progress=False)
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [None, "bytes=4000-"]


def test_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    server.behaviour.ignore_range = True
    (tmp_path / "model.ckpt.part").write_bytes(b"X" * 3000)  # would corrupt the file if appended to
    dest = tmp_path / "model.ckpt"
    download(server.url(), dest, size=len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests[0]["range"] == "bytes=3000-" and server.statuses == [200]


def test_complete_part_from_an_earlier_run_is_finished_without_downloading_again(server, tmp_path):
    (tmp_path / "model.ckpt.part").write_bytes(DATA)
    dest = tmp_path / "model.ckpt"
    download(server.url(), dest, progress=False)  # size unknown: the server answers 416 */len
    assert dest.read_bytes() == DATA and server.statuses == [416]
    assert leftovers(tmp_path) == ["model.ckpt"]


def test_stale_part_of_another_file_is_caught_by_the_hash(server, tmp_path):
    (tmp_path / "model.ckpt.part").write_bytes(b"Y" * 3000)  # a prefix that is not DATA's
    dest = tmp_path / "model.ckpt"
    with pytest.raises(DownloadError, match="sha256"):
        download(server.url(), dest, sha256=DATA_SHA, progress=False)
    assert leftovers(tmp_path) == []  # the bad .part is gone, so the next run starts clean
    download(server.url(), dest, sha256=DATA_SHA, progress=False)
    assert dest.read_bytes() == DATA


# --- rejecting what is not the file -------------------------------------------------------


def test_wrong_sha256_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    with pytest.raises(DownloadError, match="sha256") as info:
        download(server.url(), dest, sha256="0" * 64, progress=False)
    assert isinstance(info.value, UserError) and "by hand" in str(info.value)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [len(DATA) + 1, len(DATA) - 1, 10])
def test_wrong_size_leaves_nothing(server, tmp_path, size):
    dest = tmp_path / "model.ckpt"
    with pytest.raises(DownloadError, match=f"should have {size}"):
        download(server.url(), dest, size=size, progress=False)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_names_url_and_status(server, tmp_path, status):
    server.behaviour.status = status
    with pytest.raises(DownloadError) as info:
        download(server.url(), tmp_path / "model.ckpt", progress=False)
    message = str(info.value)
    assert f"HTTP {status}" in message and server.url() in message and "\n" not in message
    assert leftovers(tmp_path) == [] and len(server.requests) == 1  # not retried


@pytest.mark.parametrize(
    "content_type, body",
    [("text/html; charset=utf-8", b"not even html-looking"),  # the header says so
     ("application/octet-stream", b"\n  " + HTML),  # the header lies, the bytes tell
     ("application/octet-stream", b"\xef\xbb\xbf<html><body>moved</body></html>")],
)
def test_html_page_is_rejected(server, tmp_path, content_type, body):
    server.behaviour.data, server.behaviour.content_type = body, content_type
    with pytest.raises(DownloadError, match="HTML page"):
        download(server.url(), tmp_path / "model.ckpt", progress=False)
    assert leftovers(tmp_path) == []


def test_html_page_is_reported_before_a_size_mismatch(server, tmp_path):
    server.behaviour.data = HTML
    with pytest.raises(DownloadError, match="HTML page"):
        download(server.url(), tmp_path / "model.ckpt", size=len(DATA), sha256=DATA_SHA, progress=False)
    assert leftovers(tmp_path) == []


def test_stalled_server_times_out_quickly(server, tmp_path):
    server.behaviour.stall = True
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        download(server.url(), tmp_path / "model.ckpt", timeout=0.5, retries=1, progress=False)
    assert time.monotonic() - start < 5  # 2 attempts x 0.5 s, plus slack for a busy machine
    assert len(server.requests) == 2
    assert leftovers(tmp_path) == []


def test_unreachable_server_and_bad_url_are_download_errors(tmp_path):
    with pytest.raises(DownloadError, match="only http"):
        download("ftp://example.invalid/model.ckpt", tmp_path / "m", progress=False)
    with pytest.raises(DownloadError, match="64 hex"):
        download("http://127.0.0.1:9/m", tmp_path / "m", sha256="abc", progress=False)
    # A closed port on 127.0.0.1: refused at once, retried, then reported.
    with pytest.raises(DownloadError, match="failed after 2 attempt"):
        download("http://127.0.0.1:9/m", tmp_path / "m", retries=1, progress=False)


# --- two processes, one file --------------------------------------------------------------

SCRIPT = """
import sys
from vqclip.models.download import download
url, dest, sha, progress = sys.argv[1:]
print(download(url, dest, sha256=sha, progress=progress == "1"))
"""


def start_process(url: str, dest: Path, progress: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, url, str(dest), DATA_SHA, "1" if progress else "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_two_processes_download_the_same_file_once(server, tmp_path):
    # A holds the lock with its request parked at the server; B must then wait for the lock
    # (it says so on stderr) and, once A is done, find the file complete without a request.
    server.behaviour.gate = threading.Event()
    dest = tmp_path / "model.ckpt"
    a = start_process(server.url(), dest, progress=False)
    b = None
    try:
        wait_for(lambda: len(server.requests) == 1 or a.poll() is not None, "process A's request")
        assert a.poll() is None, a.communicate()
        b = start_process(server.url(), dest, progress=True)
        b_err = []
        reader = threading.Thread(target=lambda: b_err.extend(b.stderr), daemon=True)
        reader.start()
        wait_for(lambda: any("waiting for another process" in line for line in b_err) or b.poll() is not None,
                 "process B to wait for the lock")
        assert len(server.requests) == 1  # B did not start its own download
        server.behaviour.gate.set()
        a_out, a_err = a.communicate(timeout=30)
        b.wait(timeout=30)
        reader.join(timeout=30)
        b_out = b.stdout.read()
    finally:
        server.behaviour.gate.set()
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert a.returncode == 0, a_err
    assert b.returncode == 0, "".join(b_err)
    assert any("waiting for another process" in line for line in b_err)
    assert a_out.strip() == b_out.strip() == str(dest)
    assert len(server.requests) == 1
    assert dest.read_bytes() == DATA and leftovers(tmp_path) == ["model.ckpt"]


# --- the O_EXCL lock used where fcntl is missing --------------------------------------------


def test_fallback_lock_excludes_and_breaks_stale_locks(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "fcntl", None)
    monkeypatch.setattr(dl, "LOCK_POLL_S", 0.01)
    lock = tmp_path / "model.ckpt.lock"
    events = []

    def second():
        with dl._exclusive_lock(lock, progress=False):
            events.append("second in")

    with dl._exclusive_lock(lock, progress=False):
        assert lock.exists()
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)  # plenty of polls: the second must still be waiting
        events.append("first out")
    t.join(timeout=10)
    assert events == ["first out", "second in"] and not lock.exists()

    lock.write_text("12345\n")  # left behind by a process that died
    old = time.time() - dl.LOCK_STALE_S - 5
    os.utime(lock, (old, old))
    t = threading.Thread(target=second)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive() and events[-1] == "second in" and not lock.exists()


def test_fallback_lock_is_used_by_download(server, monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "fcntl", None)
    dest = tmp_path / "model.ckpt"
    download(server.url(), dest, sha256=DATA_SHA, progress=False)
    assert dest.read_bytes() == DATA and sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]
