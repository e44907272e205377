"""The page's Video tab: `vqclip.video.animate` and `interpolate` through the same per-device queue.

A video shows no live preview (vqclip.video has no per-frame callback yet) and runs to its end;
the page shows a GIF of its frames, written beside the run's video. As on the Generate tab, the
page names shipped presets only, and an interpolation key that is a file must lie in the outputs
folder (access.py).
"""

from pathlib import Path

from ..config import build_config, preset_names
from ..errors import UserError
from .access import check_page_config, check_page_path, shipped_preset
from .forms import prompt_lines, whole_number
from .worker import DONE, FAILED, QUEUED, Job, Workers

POLL_SECONDS = 0.5


def video_config(kind: str, preset: str, lines: list[str], count, seed, outputs_root: str):
    """The config of an animate (lines = prompts, count = frames) or interpolate job (count = between)."""
    if not lines:
        raise UserError("type a prompt first" if kind == "animate" else
                        "give at least two keys, one per line (prompts or image files)")
    if kind == "interpolate" and len(lines) < 2:
        raise UserError("give at least two keys, one per line (prompts or image files)")
    shipped_preset(preset)
    if kind == "interpolate":
        for number, key in enumerate(lines, 1):
            if Path(key).exists():  # a key that names no file is a prompt (vqclip.video.interpolation)
                check_page_path(f"key {number}", key, [Path(outputs_root).resolve()])
    overrides: dict = {"outputs_root": outputs_root, "quiet": True}
    if kind == "animate":
        overrides["prompts"] = lines
    count = whole_number("frames" if kind == "animate" else "frames between keys", count, 1)
    if count is not None:
        overrides["video"] = {"frames" if kind == "animate" else "between": count}
    seed = whole_number("seed", seed, 0)
    if seed is not None:
        overrides["seed"] = seed
    config = build_config(preset, overrides)
    check_page_config(config, outputs_root, None)
    return config


def video_status(job: Job, position: int) -> str:
    if job.status == QUEUED:
        return f"waiting: {position} run(s) ahead" if position > 0 else "waiting"
    if job.status == DONE:
        return f"done: {job.steps_done} frames · {Path(job.run_dir) / 'video.mp4'}"
    if job.finished:
        return job.status
    return "making the video (no preview for videos yet)…"


def _default(names: list[str], wanted: str, fallback: str) -> str:
    return wanted if wanted in names else fallback


def build_video_tab(gr, workers: Workers, outputs_root: str):
    """The tab's components and events; call inside the Blocks' Tabs."""
    names = preset_names()
    with gr.Tab("Video", id="video"):
        with gr.Row():
            with gr.Column():
                kind = gr.Radio(["animate", "interpolate"], value="animate", label="Kind", elem_id="video-kind")
                lines = gr.Textbox(label="Prompts (animate) or keys, one per line (interpolate: prompts or image "
                                         "files)", lines=3, elem_id="video-lines")
                preset = gr.Dropdown(names, value=_default(names, "shapes-zoom", names[0]), label="Preset",
                                     elem_id="video-preset")
                with gr.Row():
                    count = gr.Number(None, label="Frames (animate) / between keys (interpolate); empty: "
                                                  "the preset's", elem_id="video-count")
                    seed = gr.Number(None, label="Seed (empty: random)", elem_id="video-seed")
                make = gr.Button("Make the video", variant="primary", elem_id="video-start")
                message = gr.Markdown("", elem_id="video-message")
            with gr.Column():
                status = gr.Markdown("", elem_id="video-status")
                shown = gr.Image(label="Video (GIF)", type="filepath", interactive=False, height=280,
                                 buttons=["download", "fullscreen"], elem_id="video")
    job_id = gr.State(None)

    def pick_preset(kind_value):
        return _default(names, "shapes-zoom" if kind_value == "animate" else "shapes-morph", names[0])

    def submit(kind_value, text, preset_value, count_value, seed_value):
        try:
            entries = prompt_lines(text)
            config = video_config(kind_value, preset_value, entries, count_value, seed_value, outputs_root)
            inputs = entries if kind_value == "interpolate" else []
            job = workers.submit(Job(config, kind=kind_value, inputs=inputs))
        except UserError as exc:
            return None, f"Error: {exc}", ""
        return job.id, "", "waiting"

    def watch(current_id):
        job = workers.get(current_id)
        if job is None:  # nothing started: leave the page as it is
            yield gr.skip(), gr.skip(), gr.skip()
            return
        version = -1
        while not job.finished:
            version = job.wait_for_change(version, POLL_SECONDS)
            yield video_status(job, workers.position(job)), gr.skip(), gr.skip()
        yield video_status(job, -1), (str(job.final_path) if job.status == DONE else gr.skip()), \
            (f"Error: {job.error}" if job.status == FAILED else "")

    fast = dict(concurrency_limit=None, show_progress="hidden")
    kind.change(pick_preset, kind, preset, **fast)
    make.click(submit, [kind, lines, preset, count, seed], [job_id, message, status], api_name="video_start", **fast) \
        .then(watch, job_id, [status, shown, message], api_name="video_watch", **fast)
