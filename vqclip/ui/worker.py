"""Runs for the web page: one at a time per device, in a queue, each with a stop flag and previews.

A web page must never wait on a run, and two runs on one GPU would fight for its memory, so
every device gets one `Worker`: a thread that takes `Job`s from its queue in order, loads the
models once (and again only when a job needs different ones), and runs them with a callback
that publishes a preview image every few steps and stops the run when asked. A stopped run
keeps its folder and state.pt: a new job with `resume_dir` continues it. Nothing here knows
about Gradio; the page polls `Job.wait_for_change`.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image

from ..errors import UserError

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
FINISHED = (DONE, STOPPED, FAILED, CANCELLED)
VIDEO_KINDS = ("animate", "interpolate")  # vqclip.video's jobs; the page shows their GIF
KEEP_FINISHED_JOBS = 200


@dataclass(frozen=True)
class Preview:
    """The image a run shows after `step` of `steps` steps (decoded before that step's update)."""

    step: int
    steps: int
    loss: float
    image: Image.Image


class Job:
    """One run asked for by the page. Fields change under `changed`; `version` counts the changes."""

    _ids = itertools.count(1)

    def __init__(self, config: DictConfig, *, resume_dir: str | Path | None = None, preview_every: int = 5,
                 kind: str = "generate", inputs: list[str] | None = None):
        if preview_every <= 0:
            raise UserError(f"preview_every must be at least 1, not {preview_every}")
        if kind not in ("generate", *VIDEO_KINDS):
            raise ValueError(f"unknown job kind {kind!r}")
        self.id = f"job-{next(self._ids)}"
        self.config = config
        self.kind = kind  # generate (a new run, or one continued from resume_dir) | animate | interpolate
        self.inputs = list(inputs or [])  # interpolate: the keys (prompts or image files)
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.preview_every = preview_every
        self.status = QUEUED
        self.preview: Preview | None = None
        self.run_dir: Path | None = Path(resume_dir) if resume_dir else None
        self.final_path: Path | None = None
        self.steps_done = 0
        self.error: str | None = None
        self.version = 0
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._steering: dict | None = None  # a change waiting for the run's next step

    # -- what the page calls
    def request_stop(self) -> None:
        """Stop after the current step; the run writes final.png and state.pt as it ends."""
        self._stop.set()
        self._touch()

    def steer(self, change: dict) -> None:
        """Change the running run's prompts or learning rate from its next step; the run records it
        (vqclip.controls.steering). Changes sent before that step merge, the later winning."""
        from ..controls.steering import check_change

        if self.kind != "generate":
            raise UserError("steering changes a picture's run; a video's frames run with the settings they started with")
        checked = check_change(change)
        with self.changed:
            self._steering = {**(self._steering or {}), **checked}
        self._touch()

    def take_steering(self) -> dict | None:
        """The waiting change, once: what the run applies from its next step."""
        with self.changed:
            change, self._steering = self._steering, None
        return change

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def wait_for_change(self, seen_version: int, timeout: float) -> int:
        """Block until `version` differs from `seen_version` (or timeout); return the version."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen_version, timeout=timeout)
            return self.version

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished; False on timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: self.finished, timeout=timeout)

    # -- what the worker calls
    def update(self, **fields) -> None:
        with self.changed:
            for name, value in fields.items():
                setattr(self, name, value)
            self.version += 1
            self.changed.notify_all()

    def _touch(self) -> None:
        self.update()


def to_preview_image(image) -> Image.Image:
    """The first image of a B×3×H×W batch in [0, 1] as an RGB PIL image."""
    import torch

    x = torch.nan_to_num(image[0].detach().float(), nan=0.0).clamp(0, 1)
    return Image.fromarray((x * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


class Worker:
    """One thread that runs the jobs of one device, in the order they were submitted."""

    def __init__(self, device: str):
        self.device = device
        self._pending: deque[Job] = deque()
        self._lock = threading.Condition()
        self._closed = False
        self._models = None
        self._models_key: str | None = None
        self.current: Job | None = None
        self._thread = threading.Thread(target=self._loop, name=f"vqclip-worker-{device}", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            if self._closed:
                raise UserError("the UI is shutting down: no new runs")
            self._pending.append(job)
            self._lock.notify_all()
        return job

    def position(self, job: Job) -> int:
        """How many jobs run before this one (0: it runs or runs next), -1 when it is not here."""
        with self._lock:
            if job is self.current:
                return 0
            try:
                return self._pending.index(job) + (self.current is not None)
            except ValueError:
                return -1

    def close(self, timeout: float | None = None) -> None:
        """Cancel waiting jobs, stop the running one and wait for the thread to end."""
        with self._lock:
            self._closed = True
            waiting, self._pending = list(self._pending), deque()
            current = self.current
            self._lock.notify_all()
        for job in waiting:
            job.update(status=CANCELLED, error="cancelled: the UI shut down")
        if current is not None:
            current.request_stop()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                job = self.current = self._pending.popleft()
            try:
                self._run(job)
            finally:
                with self._lock:
                    self.current = None

    def _run(self, job: Job) -> None:
        if job.stop_requested:  # stopped while it waited: it never started, nothing to keep
            job.update(status=CANCELLED, error="cancelled before it started")
            return
        job.update(status=RUNNING)
        try:
            result = self._execute(job)
        except UserError as exc:  # bad input the config could not catch (size vs VQGAN factor, a file)
            job.update(status=FAILED, error=str(exc))
            return
        except Exception as exc:  # a bug: keep the page alive, keep the traceback in the server log
            log.exception("run %s failed", job.id)
            job.update(status=FAILED, error=f"internal error ({type(exc).__name__}): {' '.join(str(exc).split())}"[:500])
            return
        if job.kind in VIDEO_KINDS:
            job.update(status=DONE, run_dir=result.run_dir, final_path=result.output, steps_done=len(result.frames))
            return
        stopped = result.steps_done < int(job.config.steps)
        job.update(status=STOPPED if stopped else DONE, run_dir=result.run_dir, final_path=result.final_path,
                   steps_done=result.steps_done)

    def _execute(self, job: Job):
        from ..generation import resume, run
        from ..paths import check_paths

        check_paths(job.config, kind=job.kind if job.kind in VIDEO_KINDS else None, inputs=job.inputs,
                    starting=job.resume_dir is None)  # a missing file is told before the models load
        models = self._load_models(job.config)
        if job.kind in VIDEO_KINDS:
            return make_video_for_page(job, models)
        steps = int(job.config.steps)

        def on_step(info):
            if info.step % job.preview_every == 0 or info.step in (1, steps) or job.stop_requested:
                job.update(preview=Preview(info.step, steps, info.loss, to_preview_image(info.image)),
                           steps_done=info.step)
            return False if job.stop_requested else job.take_steering()

        if job.resume_dir is not None:
            return resume(job.resume_dir, {"steps": steps}, models=models, callback=on_step)
        return run(job.config, models=models, callback=on_step)

    def _load_models(self, config: DictConfig):
        from ..loading import load_models, models_key

        key = models_key(config)
        if key != self._models_key:
            self._models = self._models_key = None  # free the old models before loading new ones
            self._models = load_models(config)
            self._models_key = key
        return self._models


def make_video_for_page(job: Job, models):
    """A vqclip.video job, plus a GIF of its frames beside the video for the page to show.

    vqclip.video has no per-frame callback yet: a video shows no preview and runs to its end.
    """
    from ..video.commands import make_video
    from ..video.frames import read_settings, write_video

    result = make_video(job.kind, job.inputs, job.config, models)
    if result.output.suffix.lower() != ".gif":
        gif = result.run_dir / "video.gif"
        write_video(gif, result.frames, result.fps, read_settings(result.output))
        result.output = gif
    return result


class Workers:
    """The page's runs, dispatched to one Worker per device (created on first use)."""

    def __init__(self):
        self._workers: dict[str, Worker] = {}
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, job: Job) -> Job:
        from ..machine.device import pick_device

        device = str(pick_device(job.config.device))
        with self._lock:
            worker = self._workers.get(device)
            if worker is None:
                worker = self._workers[device] = Worker(device)
            self._jobs[job.id] = job
            finished = [key for key, old in self._jobs.items() if old.finished]
            for key in finished[:-KEEP_FINISHED_JOBS]:  # a page left open for days stays small
                del self._jobs[key]
        return worker.submit(job)

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id) if job_id else None

    def position(self, job: Job) -> int:
        with self._lock:
            workers = list(self._workers.values())
        return max((worker.position(job) for worker in workers), default=-1)

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close(timeout)
