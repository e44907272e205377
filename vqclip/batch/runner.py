"""Running a batch: here in this process, in N local worker processes, or as Ray tasks.

Every way yields each job's result as it finishes, appends its summary line, and at the end
rewrites summary.jsonl (one line per job, in order) and draws contact_sheet.png. Each worker
keeps its loaded models between jobs (vqclip.batch.kinds.WORKER_CACHE), so a batch that uses one
VQGAN and one CLIP loads them once per worker.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing
import re
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..machine.threads import environment, wait_policy
from .kinds import clear_folder, execute
from .spec import Job, jobs_from
from .summary import SUMMARY_NAME, append_record, config_hash, is_finished, read_summary, write_summary

log = logging.getLogger(__name__)

CONTACT_SHEET_NAME = "contact_sheet.png"


@dataclass
class JobResult:
    """One job's outcome; `record()` is its line in summary.jsonl (paths relative to the batch folder)."""

    job: Job
    status: str  # ok | failed
    error: str | None  # one line, for a failed job
    seconds: float
    score: float | None  # the final CLIP score (generate jobs)
    files: list[Path]  # what it wrote, the final output first
    caption: dict = field(default_factory=dict)  # prompt, preset, seed
    config_hash: str = ""
    skipped: bool = False  # finished by an earlier run of the batch (--resume)

    @property
    def full_caption(self) -> dict:
        """prompt, preset and seed: what the job made them, else what its settings asked for."""
        asked = {"prompt": self.job.title, "preset": self.job.settings.get("preset", "default"),
                 "seed": self.job.settings.get("seed")}
        return {**asked, **{key: value for key, value in self.caption.items() if value is not None}}

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def record(self, out: Path) -> dict:
        return {"job": self.job.index, "name": self.job.name, "kind": self.job.kind, "status": self.status,
                "error": self.error, "seconds": self.seconds, "score": self.score,
                "outputs": [_relative(path, out) for path in self.files], **self.full_caption,
                "config_hash": self.config_hash, "settings": self.job.settings}

    @classmethod
    def from_record(cls, job: Job, record: dict, out: Path, job_hash: str, skipped: bool = False) -> JobResult:
        caption = {key: record.get(key) for key in ("prompt", "preset", "seed") if key in record}
        return cls(job, record["status"], record.get("error"), record.get("seconds", 0.0), record.get("score"),
                   [out / path for path in record.get("outputs") or []], caption, job_hash, skipped)


def run(jobs, out: str | Path | None = None, *, workers: int = 1, ray: str | bool | None = None, resume: bool = False,
        threads: int | None = None, contact_sheet: bool = True, overwrite: bool = False) -> Iterator[JobResult]:
    """Run a batch into `out`; iterate over the result to run it, one JobResult per job as it finishes.

    jobs: a batch file path, a batch mapping ({defaults, grid, jobs}), a list of setting mappings
    (`{"prompt": "a red circle", "preset": "shapes", "seed": 1}`) or Jobs. out: the batch's folder
    (default: a new outputs/<date>/NNNN-batch/); one that holds a batch's results is refused unless
    `resume` or `overwrite` says what to do with them. workers: local processes
    (one GPU each when there are several). ray: True (a local or the configured cluster) or an
    address. resume: continue the batch in `out`: skip the jobs finished before with the same
    settings (refused when none of its finished jobs is one of these). overwrite: first remove the
    earlier batch from `out` (its summary.jsonl, contact sheet and job folders; other files stay).
    threads: torch CPU threads per job (CPU images are identical across runs with the same seed and
    thread count). The settings and `out` are checked and Ray is reached before this returns; the
    jobs run as you iterate.
    """
    jobs = jobs_from(jobs)
    if resume and overwrite:
        raise UserError("choose --resume (continue the batch in --out) or --overwrite (replace it), not both")
    if workers < 1:
        raise UserError(f"workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, not {threads}")
    if ray is not None and ray is not False and workers != 1:
        raise UserError("choose --workers or --ray, not both (on Ray every free GPU or CPU takes a job)")
    if workers > 1 and not on_ray_asked(ray):
        refuse_unguarded_script(workers)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the batch")
    hashes = {job.index: config_hash(job) for job in jobs}
    earlier = {}
    if out is not None and Path(out).is_dir():  # before Ray is reached or anything is removed
        earlier = check_earlier_batch(jobs, hashes, Path(out), resume=resume, overwrite=overwrite)
    on_ray = on_ray_asked(ray)
    started_ray = False
    if on_ray:  # before any folder is made: an unreachable cluster leaves nothing behind
        from . import ray_tasks

        started_ray = ray_tasks.connect(None if ray is True else str(ray))
    if out is None:
        from ..outputs import new_run_dir

        out = new_run_dir("outputs", "batch")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the batch folder {out}: {exc.strerror or exc}") from None
    if overwrite:
        remove_earlier_batch(jobs, out)
    return _run(jobs, out, hashes, earlier, workers, on_ray, started_ray, threads, contact_sheet)


# -- one batch per folder --------------------------------------------------------------------------
JOB_FOLDER = re.compile(r"\d{3,}-[a-z0-9_-]+")  # Job.name: 003-a-red-circle


def batch_files(jobs: list[Job], out: Path) -> tuple[list[str], list[str]]:
    """(summary.jsonl and contact_sheet.png where present, the job folders present): what a batch
    wrote in `out`, by the names its summary lists and the names these jobs would write."""
    files = [name for name in (SUMMARY_NAME, CONTACT_SHEET_NAME) if (out / name).is_file()]
    names = {*read_summary(out), *(job.name for job in jobs)}
    folders = sorted(name for name in names if JOB_FOLDER.fullmatch(name) and (out / name).is_dir())
    return files, folders


def describe(files: list[str], folders: list[str]) -> str:
    """'summary.jsonl, contact_sheet.png and 3 job folders'."""
    parts = [*files, *([f"{len(folders)} job folder{'s' if len(folders) != 1 else ''}"] if folders else [])]
    return " and ".join(part for part in (", ".join(parts[:-1]), parts[-1]) if part)


def check_earlier_batch(jobs: list[Job], hashes: dict[int, str], out: Path, *, resume: bool,
                        overwrite: bool) -> dict[str, dict]:
    """The summary lines that --resume continues from ({} otherwise). A folder that holds a batch's
    results is refused without --resume or --overwrite (running would replace finished jobs and
    leave the others out of summary.jsonl), and so is --resume into another batch's folder."""
    files, folders = batch_files(jobs, out)
    if overwrite or not (files or folders):
        return {}
    if not resume:
        raise UserError(f"{out} holds the results of a batch ({describe(files, folders)}): continue it with "
                        "--resume, write this batch to another --out, or replace them with --overwrite")
    earlier = read_summary(out)
    finished = [name for name, record in earlier.items() if record.get("status") == "ok"]
    kept = [job for job in jobs if is_finished(earlier.get(job.name), job, hashes[job.index], out)]
    if finished and not kept:
        raise UserError(f"{out} holds another batch: none of its {len(finished)} finished jobs is a job of this "
                        "one with the same settings, so --resume has nothing to continue; write this batch to "
                        "another --out, or replace that one with --overwrite")
    ours = {job.name for job in jobs}
    left = [name for name in folders if name not in ours]
    if left:
        log.warning("%d job folder%s in %s %s not jobs of this batch: left as they are, and not in summary.jsonl "
                    "(%s)", len(left), "s" if len(left) != 1 else "", out, "are" if len(left) != 1 else "is",
                    ", ".join(left[:5]) + (", ..." if len(left) > 5 else ""))
    return earlier


def remove_earlier_batch(jobs: list[Job], out: Path) -> None:
    """--overwrite: summary.jsonl, contact_sheet.png and the job folders go; other files in `out` stay."""
    files, folders = batch_files(jobs, out)
    if not (files or folders):
        return
    for name in [*files, *folders]:
        clear_folder(out / name)
    log.warning("--overwrite: removed the earlier batch in %s (%s)", out, describe(files, folders))


def on_ray_asked(ray: str | bool | None) -> bool:
    return ray is not None and ray is not False


def refuse_unguarded_script(workers: int) -> None:
    """Worker processes start by importing the caller's script again (Python's spawn start method, the
    only one safe with CUDA and threads), which would start the batch again in every worker and
    break the pool. A script must keep its batch under `if __name__ == "__main__":`; say so at once.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not Path(path).is_file():  # python -c, a notebook, the REPL: nothing is imported again
        return
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:  # not called while the script's top level runs
        return
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= node.end_lineno:
            return
    raise UserError(f"vqclip.batch.run(..., workers={workers}) starts worker processes that import "
                    f"{Path(path).name} again: put the code that runs the batch under "
                    "`if __name__ == \"__main__\":` (or use workers=1)")


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"`, either way round."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    return {ast.unparse(test.left), ast.unparse(test.comparators[0])} == {"__name__", "'__main__'"}


def _run(jobs: list[Job], out: Path, hashes: dict[int, str], earlier: dict[str, dict], workers: int, on_ray: bool,
         started_ray: bool, threads: int | None, contact_sheet: bool) -> Iterator[JobResult]:
    results: dict[int, JobResult] = {}
    pending = []
    for job in jobs:
        record = earlier.get(job.name)
        if is_finished(record, job, hashes[job.index], out):
            results[job.index] = JobResult.from_record(job, record, out, hashes[job.index], skipped=True)
            yield results[job.index]
        else:
            pending.append(job)
    finished = None
    try:
        if on_ray:
            from . import ray_tasks

            finished = ray_tasks.run_on_ray(pending, out, threads)
        elif workers > 1 and len(pending) > 1:
            finished = _run_in_processes(pending, out, workers, threads)
        else:
            finished = _run_here(pending, out, threads)
        for job, record in finished:
            result = JobResult(job, record["status"], record["error"], record["seconds"], record["score"],
                               [out / job.name / name for name in record["files"]], record["caption"],
                               hashes[job.index])
            append_record(out, result.record(out))
            results[job.index] = result
            yield result
    finally:
        if finished is not None:  # stopped early: the backend cancels what has not started
            finished.close()
        if started_ray:
            import ray

            ray.shutdown()
    write_summary(out, [results[job.index].record(out) for job in jobs])
    if contact_sheet:
        from .contact_sheet import write_contact_sheet

        write_contact_sheet(out / CONTACT_SHEET_NAME, [results[job.index] for job in jobs])


def _run_here(pending: Iterable[Job], out: Path, threads: int | None) -> Iterator[tuple[Job, dict]]:
    for job in pending:
        yield job, execute(job.kind, job.settings, clear_folder(out / job.name), threads=threads)


# -- local worker processes ------------------------------------------------------------------------
_WORKER_DEVICE: str | None = None  # set in each worker process by _start_worker


def _start_worker(devices) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()


def _worker_job(kind: str, settings: dict, folder: Path, threads: int | None) -> dict:
    return execute(kind, settings, folder, device=_WORKER_DEVICE, threads=threads)


def worker_devices(workers: int) -> list[str | None]:
    """With several GPUs, worker i owns cuda:(i mod count); otherwise each job's own device setting."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i % count}" for i in range(workers)] if count > 1 else [None] * workers


def _run_in_processes(pending: list[Job], out: Path, workers: int, threads: int | None):
    workers = min(workers, len(pending))
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    devices = context.Queue()
    for device in worker_devices(workers):
        devices.put(device)
    # Each job keeps the default thread count (its pixels are a single run's); the workers share the
    # cores by letting idle threads sleep, which the spawned processes read from the environment.
    with environment(wait_policy(busy=workers - 1)), \
            ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(devices,)) as pool:
        futures = {pool.submit(_worker_job, job.kind, job.settings, clear_folder(out / job.name), threads): job
                   for job in pending}
        try:
            for future in as_completed(futures):
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker killed (out of memory) fails its job
                    record = {"status": "failed", "error": f"the worker process died: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}", "seconds": 0.0,
                              "score": None, "files": [], "caption": {}}
                yield futures[future], record
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _relative(path: Path, out: Path) -> str:
    try:
        return Path(path).relative_to(out).as_posix()
    except ValueError:
        return str(path)
