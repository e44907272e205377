"""Batch jobs as Ray tasks: one GPU each where the cluster has GPUs, else CPUs.

Ray reuses its worker processes, and each keeps its models in vqclip.batch.kinds.WORKER_CACHE,
so jobs that share model settings load them once per worker. A worker that sees the batch's
output folder (the same machine or a shared file system, recognised by a token file) writes
there directly; any other runs the job in a temporary folder and sends the files back.
vqclip must be installed on every machine of the cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import UserError
from .spec import Job

TOKEN_NAME = ".vqclip-batch-token"
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'vqclip[ray]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` (None: RAY_ADDRESS or a new local one; 'auto'; 'local';
    'HOST:PORT'; 'ray://HOST:PORT'). Returns True when this call started Ray (the caller shuts it down).
    """
    ray = import_ray()
    if address not in (None, "", "auto", "local"):
        check_reachable(address)
    if ray.is_initialized():  # a script that called ray.init() itself: use that
        return False
    try:
        with stderr_kept_back():
            if address in (None, "", "local"):
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"cannot join the Ray cluster at {address or 'the default address'}: "
                        f"{text[0] if text else type(exc).__name__}") from None
    return True


@contextlib.contextmanager
def stderr_kept_back():
    """Hold back what Ray's C++ core writes to stderr while it connects (a failed attempt logs a
    warning a second for about 20 s): shown when the connection succeeds, dropped when it fails,
    since the failure is then reported in one line."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if succeeded:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))


def check_reachable(address: str) -> None:
    """Fail in seconds, in one line, where ray.init would wait a long time for an unreachable head."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise UserError(f"--ray {address}: give HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; "
                        "start it with `ray start --head` or check the address") from None


def run_on_ray(pending: list[Job], out: Path, threads: int | None) -> Iterator[tuple[Job, dict]]:
    ray = import_ray()
    token = secrets.token_hex(16)
    atomic_write_text(out / TOKEN_NAME, token)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    # max_calls=0: keep the worker process (and its model cache) for the next job, GPU or not.
    task = ray.remote(num_cpus=threads or 1, num_gpus=gpus, max_calls=0)(ray_job)
    waiting = {task.remote(job.kind, job.settings, job.name, str(out.resolve()), token, threads or 1): job
               for job in pending}
    try:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            for ref in done:
                job = waiting.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died fails its job only
                    record = {"status": "failed", "error": f"the Ray task failed: {type(exc).__name__}",
                              "seconds": 0.0, "score": None, "files": [], "caption": {}}
                receive_files(out / job.name, record.pop("shipped", None))
                yield job, record
    finally:
        for ref in waiting:  # stopped early: the jobs not yet started need not run
            ray.cancel(ref)
        (out / TOKEN_NAME).unlink(missing_ok=True)


def ray_job(kind: str, settings: dict, name: str, out: str, token: str, threads: int) -> dict:
    """The Ray task: run one job where the batch folder is, or elsewhere and send the files."""
    from .kinds import clear_folder, execute

    marker = Path(out) / TOKEN_NAME
    if marker.is_file() and marker.read_text() == token:
        return {**execute(kind, settings, clear_folder(Path(out) / name), threads=threads), "shipped": None}
    with tempfile.TemporaryDirectory(prefix="vqclip-batch-") as tmp:
        folder = Path(tmp) / name
        record = execute(kind, settings, folder, threads=threads)
        record["shipped"] = {path.relative_to(folder).as_posix(): path.read_bytes()
                             for path in sorted(folder.rglob("*")) if path.is_file()}
    return record


def receive_files(folder: Path, files: dict[str, bytes] | None) -> None:
    """Write the files a remote worker sent into the job's folder (None: it wrote them itself)."""
    if files is None:
        return
    from .kinds import clear_folder

    clear_folder(folder)
    for relative, data in files.items():
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder.resolve()):  # a worker's answer is data, not a path to trust
            raise UserError(f"a Ray worker sent a file outside its job folder: {relative}")
        atomic_write_bytes(target, data)
