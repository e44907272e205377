"""Downloading model files: resumable, verified, and safe when two processes want the same file.

Model files are large (up to 8 GB), their links die, and mirrors answer with HTML error pages
under the right file name. So a download here:

1. returns at once, without any network, when the file is already there and matches;
2. takes a per-file lock (`<name>.lock`), so two runs never write the same file;
3. streams into `<name>.part`, resuming it with a Range request after a cut connection;
4. rejects HTML pages, checks size and sha256, and only then renames `.part` onto the name:
   the final file is only ever visible complete.

Every failure is a `DownloadError` whose one-line message says what went wrong and what to do.
Only the standard library (urllib) and tqdm are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from vqclip import __version__
from vqclip.errors import UserError

try:  # POSIX: a real advisory lock that the kernel releases if the holder dies
    import fcntl
except ImportError:  # Windows: fall back to a lock file created with O_EXCL (see _file_lock)
    fcntl = None

CHUNK_BYTES = 1 << 20  # 1 MiB: large enough for fast disks, small enough for a smooth bar
RETRY_PAUSE_S = 1.0  # pause before retry n is n * this: gives a flaky link time to recover
LOCK_POLL_S = 0.2  # how often the O_EXCL fallback lock checks whether the holder is done
LOCK_STALE_S = 60.0  # an O_EXCL lock file untouched this long belongs to a dead process
_SNIFF_BYTES = 64 * 1024  # enough to find the first non-space byte of any real file

# Network failures that may go away on a second try; a resume picks up what is on disk.
# (socket.timeout is TimeoutError since 3.10; IncompleteRead and RemoteDisconnected are
# HTTPExceptions; ConnectionError covers resets and refused connections.)
_TRANSIENT = (TimeoutError, ConnectionError, http.client.HTTPException)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
_BOM = b"\xef\xbb\xbf"
_BY_HAND = "or download the file by hand and pass its path"


class DownloadError(UserError):
    """A file could not be downloaded, or what arrived is not the file that was expected."""


class _Retry(Exception):
    """A transient failure: the caller tries again, resuming from the `.part` file."""


def cache_dir() -> Path:
    """Where downloaded models live: `$VQCLIP_CACHE` if set, else `~/.cache/vqclip`.

    Read at call time (so tests and users can change it) and never created here: the folder
    appears only when something is downloaded into it.
    """
    env = os.environ.get("VQCLIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vqclip"


def sha256_of(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The hex sha256 of a file, read in chunks so that an 8 GB checkpoint costs no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    retries: int = 3,
) -> Path:
    """Download `url` to `dest` and return `dest` as a Path.

    sha256, size: what the file must be; checked before it becomes visible under `dest`.
        A `dest` that is already there and matches is returned without any network.
    timeout: seconds the server may stay silent (connect, headers, or between bytes).
    progress: show a tqdm bar (and a note when waiting for another process) on stderr.
    retries: how many times a cut or stalled connection is tried again; each retry
        resumes from the bytes already on disk.
    """
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"cannot download {url!r}: only http:// and https:// URLs are supported; {_BY_HAND}")
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise DownloadError(f"the expected sha256 for {url} must be 64 hex digits, not {sha256!r}; fix the checksum")
    dest = Path(dest)
    if _is_complete(dest, size, sha256):  # the common case: cached, no lock, no network
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(dest.parent, e) from e

    with _exclusive_lock(dest.with_name(dest.name + ".lock"), progress=progress):
        # Another process may have finished this very file while we waited for the lock.
        if _is_complete(dest, size, sha256):
            return dest
        if dest.exists():
            _say(progress, f"{dest} does not match the expected size/sha256: downloading it again")
        part = dest.with_name(dest.name + ".part")
        _fetch_with_retries(url, part, size=size, timeout=timeout, progress=progress, retries=retries)
        _verify(url, part, dest.name, size=size, sha256=sha256)
        try:
            os.replace(part, dest)  # atomic: readers see no file or the whole verified file
        except OSError as e:
            raise _write_error(dest, e) from e
    return dest


# --- checks -------------------------------------------------------------------------------


def _is_complete(path: Path, size: int | None, sha256: str | None) -> bool:
    """True if `path` is a file with the expected size and hash (those that are known)."""
    try:
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
        return sha256 is None or sha256_of(path) == sha256
    except OSError:  # vanished or unreadable: treat as absent and let the download report
        return False


def _looks_like_html(head: bytes) -> bool:
    """Model files (zip, pickle, safetensors, YAML, JSON) never start with '<'; web pages do."""
    head = head.removeprefix(_BOM).lstrip()  # a UTF-8 BOM or blank lines may come first
    return head[:1] == b"<"


def _html_error(url: str, name: str) -> DownloadError:
    return DownloadError(
        f"{url} sent an HTML page instead of {name} (the link is dead, moved, or needs a login); "
        f"open it in a browser to see why, {_BY_HAND}"
    )


def _size_error(url: str, name: str, got: int, size: int) -> DownloadError:
    return DownloadError(
        f"{url} has {got} bytes but {name} should have {size} (a broken or different file); {_BY_HAND}"
    )


def _verify(url: str, part: Path, name: str, *, size: int | None, sha256: str | None) -> None:
    """Check the finished `.part`; on any mismatch delete it (it can never become right) and raise."""
    try:
        with open(part, "rb") as f:
            head = f.read(_SNIFF_BYTES)
        actual = part.stat().st_size
        error = None
        if _looks_like_html(head):  # first: explains a wrong size or hash better than they do
            error = _html_error(url, name)
        elif size is not None and actual != size:
            error = _size_error(url, name, actual, size)
        elif size is None and actual == 0:
            error = DownloadError(f"{url} sent an empty file instead of {name}; {_BY_HAND}")
        elif sha256 is not None and (digest := sha256_of(part)) != sha256:
            error = DownloadError(
                f"{name} from {url} has sha256 {digest}, expected {sha256} (corrupted or a different "
                f"version); run again to download it afresh, {_BY_HAND}"
            )
    except OSError as e:
        raise _write_error(part, e) from e
    if error is not None:
        _remove(part)
        raise error


# --- fetching -----------------------------------------------------------------------------


def _fetch_with_retries(url: str, part: Path, *, size, timeout, progress, retries) -> None:
    """Fill `part` with the whole file, retrying transient failures; each try resumes."""
    failures = 0
    while True:
        try:
            _fetch_once(url, part, size=size, timeout=timeout, progress=progress)
            return
        except _Retry as e:
            failures += 1
            if failures > retries:
                kept = part.stat().st_size if part.exists() else 0
                where = f"{kept} bytes are kept in {part} and the next run resumes from there, " if kept else ""
                raise DownloadError(
                    f"downloading {url} failed after {failures} attempt(s): {e}; {where}"
                    f"check your connection or raise the timeout, {_BY_HAND}"
                ) from e
            time.sleep(RETRY_PAUSE_S * failures)


def _fetch_once(url: str, part: Path, *, size, timeout, progress) -> None:
    """One request: append to `part` (206) or rewrite it (200). Raises _Retry or DownloadError."""
    offset = _resume_offset(part, size)
    if offset and offset == size:  # an earlier run got every byte but stopped before the rename
        return
    response = _request(url, part, offset, timeout)
    if response is None:  # the server has nothing after `offset`: the .part is the whole file
        return
    with response:
        if response.headers.get_content_type() in ("text/html", "application/xhtml+xml"):
            _remove(part)
            raise _html_error(url, part.name.removesuffix(".part"))
        length = _int_or_none(response.headers.get("Content-Length"))  # bytes in this answer
        mode, offset, total = _where_the_body_goes(response, part, offset, length)
        _stream(response, part, mode, url=url, offset=offset, length=length, total=total, size=size,
                timeout=timeout, progress=progress)


def _resume_offset(part: Path, size: int | None) -> int:
    """The bytes a `.part` from an earlier try holds, or 0 when there is none or it must start over."""
    try:
        offset = part.stat().st_size if part.exists() else 0
    except OSError as e:
        raise _write_error(part, e) from e
    if size is not None and offset > size:  # not a prefix of the expected file: start over
        _remove(part)
        return 0
    return offset


def _request(url: str, part: Path, offset: int, timeout):
    """The response to a GET (with a Range from `offset`), or None when the .part is already complete."""
    headers = {"User-Agent": f"vqclip/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return _unsatisfied_range(e, part, offset)
        raise DownloadError(
            f"{url} answered HTTP {e.code} {e.reason}; check the URL (the file may have moved), {_BY_HAND}"
        ) from e
    except urllib.error.URLError as e:  # connecting failed; the cause is in e.reason
        if isinstance(e.reason, _TRANSIENT):
            raise _Retry(_describe(e.reason, timeout)) from e
        raise DownloadError(f"cannot reach {url}: {e.reason}; check your connection or proxy, {_BY_HAND}") from e
    except _TRANSIENT as e:  # urllib lets errors while waiting for the headers through unwrapped
        raise _Retry(_describe(e, timeout)) from e


def _unsatisfied_range(e: urllib.error.HTTPError, part: Path, offset: int) -> None:
    """A 416 to our Range: nothing is left after `offset`. Either the .part already holds the whole
    file (return), or it is longer than the file on the server, a different file: start over."""
    match = _UNSATISFIED_RANGE.match(e.headers.get("Content-Range", ""))
    if match and int(match.group(1)) == offset:
        return None
    _remove(part)
    raise _Retry("the server refused to resume, starting over") from e


def _where_the_body_goes(response, part: Path, offset: int, length: int | None) -> tuple[str, int, int | None]:
    """(file mode, offset, bytes in the whole file if known) for the answer's body.

    A 206 answer continues the .part (if it is the piece we asked for); a 200 is the whole file
    again, because the server ignored our Range, and rewrites it from the start.
    """
    if response.status != 206:
        return "wb", 0, length
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != offset:  # not the piece we asked for
        _remove(part)
        raise _Retry("the server sent a different range than asked for, starting over")
    total = int(match.group(3)) if match.group(3) != "*" else (None if length is None else offset + length)
    return "ab", offset, total


def _stream(response, part: Path, mode: str, *, url, offset, length, total, size, timeout, progress) -> None:
    """Copy the response body into `part`; raise _Retry if the connection breaks off."""
    name = part.name.removesuffix(".part")
    received = 0
    rejected = None
    head = b""  # the first bytes of the file, until they show whether it is a web page
    checked = False
    try:
        with open(part, mode) as f, tqdm(total=total, initial=offset, desc=name, unit="B", unit_scale=True,
                                         unit_divisor=1024, disable=not progress, file=sys.stderr) as bar:
            while True:
                try:
                    # read1, not read: read() waits for the whole MiB and loses what it got if
                    # the connection stalls or breaks meanwhile; read1 hands over what arrived.
                    chunk = response.read1(CHUNK_BYTES)
                except _TRANSIENT as e:
                    raise _Retry(f"{_describe(e, timeout)} after {offset + received} bytes") from e
                if not chunk:
                    break
                if not checked:  # fail fast, before pulling gigabytes of the wrong thing
                    head = (head + chunk)[:_SNIFF_BYTES]
                    if head.removeprefix(_BOM).strip() or len(head) == _SNIFF_BYTES:
                        checked = True
                        if offset == 0 and _looks_like_html(head):  # a resumed start was checked before
                            rejected = _html_error(url, name)
                            break
                        if size is not None and total is not None and total != size:
                            rejected = _size_error(url, name, total, size)
                            break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before anyone resumes from or renames them
    except OSError as e:  # network errors became _Retry above, so this is the disk (full, read-only)
        raise _write_error(part, e) from e
    if rejected is not None:
        _remove(part)
        raise rejected
    # http.client returns b"" instead of raising when a Content-Length body ends early.
    if length is not None and received < length:
        raise _Retry(f"the connection closed after {offset + received} of {offset + length} bytes")


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"the server sent nothing for {timeout:g} s (timed out)"
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"the connection broke ({detail})"


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _write_error(path: Path, error: OSError) -> DownloadError:
    return DownloadError(
        f"cannot write {path}: {error.strerror or error}; free some disk space or set VQCLIP_CACHE to a "
        f"writable folder"
    )


def _say(progress: bool, message: str) -> None:
    if progress:  # progress=False means "quiet": scripts and tests
        tqdm.write(message, file=sys.stderr)


# --- locking ------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, *, progress: bool):
    """Hold `lock_path` exclusively (across processes) for the duration of the block."""
    if fcntl is None:
        with _file_lock(lock_path, progress=progress):
            yield
        return
    # The lock file is left behind on purpose: deleting it would let a process that opened
    # the old file and one that creates a new one both "hold" the lock at the same time.
    try:
        f = open(lock_path, "ab")  # "a" creates it without truncating anybody's file
    except OSError as e:
        raise _write_error(lock_path, e) from e
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"waiting for another process that is downloading {lock_path.name.removesuffix('.lock')}")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _file_lock(lock_path: Path, *, progress: bool):
    """Lock by creating `lock_path` with O_EXCL (for platforms without fcntl).

    Nothing releases such a lock if its holder dies, so the holder touches the file every
    LOCK_STALE_S / 4 seconds from a thread, and a waiter removes a file untouched for
    LOCK_STALE_S: a dead process blocks others for a minute, not forever.
    """
    waiting_said = False
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except (FileExistsError, PermissionError) as e:
            # Windows answers PermissionError while another process is deleting the file.
            if isinstance(e, PermissionError) and not lock_path.exists():
                raise _write_error(lock_path, e) from e
            if _is_stale(lock_path):
                _remove(lock_path)
                continue
            if not waiting_said:
                _say(progress, f"waiting for another process that is downloading "
                               f"{lock_path.name.removesuffix('.lock')} (or delete {lock_path})")
                waiting_said = True
            time.sleep(LOCK_POLL_S)
        except OSError as e:
            raise _write_error(lock_path, e) from e
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")  # for a human wondering who holds it
    stop = threading.Event()
    heartbeat = threading.Thread(target=_touch_until, args=(lock_path, stop), daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        _remove(lock_path)


def _is_stale(lock_path: Path) -> bool:
    try:
        return time.time() - lock_path.stat().st_mtime > LOCK_STALE_S
    except FileNotFoundError:  # released just now: the next O_EXCL attempt takes it
        return False


def _touch_until(path: Path, stop: threading.Event) -> None:
    while not stop.wait(LOCK_STALE_S / 4):
        with contextlib.suppress(OSError):
            os.utime(path)
