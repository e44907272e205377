"""The web page: `vqclip ui` (Gradio, the optional extra `ui`).

*Generate*: prompts, preset and the main settings, Start / Stop / Continue, a live
preview with the step and loss, the final image. *Past runs*: the outputs folder's runs with their
settings, run again or continue with one click. *Video* (when vqclip.video is installed): animate
and interpolate, in video_tab.py. Runs go to `Workers` (one per device, queued), so
a handler only submits or watches and the page never waits on a run. Bad input comes back as a
message on the page (one line, the same text the command line prints), never a traceback.
Whoever opens the page is not trusted with the server's files (access.py): its settings may name
files under the outputs folder or its own uploads only, and beyond loopback it asks for a login.
"""

import logging
from pathlib import Path

from ..config import preset_names, read_yaml
from ..errors import UserError
from . import gallery
from .access import check_listening, is_loopback
from .forms import Form, config_from_form, form_defaults
from .worker import DONE, FAILED, QUEUED, RUNNING, STOPPED, Job, Workers

log = logging.getLogger(__name__)

# Small images (the shapes world is 64 px) are shown large, with sharp pixels rather than a blur.
CSS = """
#preview img, #final img { width: 256px; height: 256px; object-fit: contain; image-rendering: pixelated; }
#gallery img { image-rendering: pixelated; }
#message p, #gallery-message p { color: #b00020; font-weight: 600; }
"""
POLL_SECONDS = 0.5  # the longest a watcher waits before it looks at the queue position again


def import_gradio():
    try:
        import gradio
    except ImportError:
        raise UserError("the web UI needs Gradio: pip install 'vqclip[ui]'") from None
    return gradio


def status_text(job: Job, position: int) -> str:
    preview = job.preview
    progress = f"step {preview.step}/{preview.steps} · loss {preview.loss:.4f}" if preview else ""
    if job.status == QUEUED:
        return f"waiting: {position} run(s) ahead" if position > 0 else "waiting"
    if job.status == RUNNING:
        return f"stopping… {progress}" if job.stop_requested else (progress or "loading the models…")
    if job.status == DONE:
        return f"done: {job.steps_done} steps · {job.final_path}"
    if job.status == STOPPED:
        return f"stopped at step {job.steps_done}/{job.config.steps} · press Continue to go on · {job.run_dir}"
    return job.status


def error_message(text: str | None) -> str:
    return f"Error: {text}" if text else ""


def gallery_items(outputs_root: str | Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(image, caption) pairs for the Gallery, and the image paths in the same order."""
    runs = gallery.find_runs(outputs_root)
    return [(str(run.image), run.caption()) for run in runs], [str(run.image) for run in runs]


def continue_job(run_dir: str | Path, steps: int | None, preview_every: int) -> Job:
    """A job that continues a stopped run (or extends a finished one to `steps`)."""
    run_dir = Path(run_dir)
    past = gallery.read_run(run_dir / "final.png")
    if past is None or not past.can_continue:
        raise UserError(f"{run_dir} holds no state to continue from")
    steps = int(steps) if steps else past.steps
    if steps <= past.step:
        raise UserError(f"this run already has {past.step} steps: set Steps above {past.step} to continue it")
    stored = read_yaml(run_dir / "config.yaml")
    from ..config import build_config

    config = build_config(None, {**stored, "steps": steps, "run_dir": str(run_dir), "quiet": True})
    return Job(config, resume_dir=run_dir, preview_every=preview_every)


def upload_folder() -> str:
    """Where Gradio keeps what the page uploads: the one place outside the outputs folder whose
    files the page may name."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def build_app(workers: Workers, *, preset: str = "shapes", outputs_root: str | Path = "outputs",
              preview_every: int = 5):
    """The Gradio Blocks of the page; `serve()` launches it."""
    gr = import_gradio()
    outputs_root = str(outputs_root)
    uploads = upload_folder()
    names = preset_names()
    if preset not in names:
        raise UserError(f"unknown preset {preset!r}; valid choices: {', '.join(names)}")
    start = form_defaults(preset)
    first_items, first_paths = gallery_items(outputs_root)

    with gr.Blocks(title="vqclip", analytics_enabled=False) as app:
        job_id = gr.State(None)
        last_run = gr.State(None)
        gallery_paths = gr.State(first_paths)
        selected = gr.State(None)
        gr.Markdown("## vqclip — text to image by VQGAN+CLIP")
        with gr.Tabs(selected="generate") as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        prompts = gr.Textbox(label="Prompts (one per line; text:weight, fog:-0.5)", lines=3,
                                             placeholder="a red triangle on a black background", elem_id="prompts")
                        preset_box = gr.Dropdown(names, value=preset, label="Preset", elem_id="preset")
                        with gr.Row():
                            steps = gr.Number(start["steps"], label="Steps", elem_id="steps")
                            seed = gr.Number(start["seed"], label="Seed (empty: random)", elem_id="seed")
                            cutn = gr.Number(start["cutn"], label="Cutouts", elem_id="cutn")
                        with gr.Row():
                            width = gr.Number(start["width"], label="Width", elem_id="width")
                            height = gr.Number(start["height"], label="Height", elem_id="height")
                        with gr.Accordion("Images and more settings", open=False):
                            init_image = gr.Image(label="Init image", type="filepath", sources=["upload"])
                            image_prompts = gr.File(label="Image prompts", file_count="multiple",
                                                    file_types=["image"], type="filepath")
                            image_weight = gr.Number(1.0, label="Image prompt weight")
                            extra = gr.Textbox(label="More settings (key=value per line)", lines=3,
                                               placeholder="lr=0.2\ninit.weight=0.5", elem_id="extra")
                        with gr.Row():
                            start_button = gr.Button("Start", variant="primary", elem_id="start")
                            stop_button = gr.Button("Stop", elem_id="stop")
                            continue_button = gr.Button("Continue", elem_id="continue")
                        message = gr.Markdown("", elem_id="message")
                    with gr.Column(scale=1):
                        status = gr.Markdown("", elem_id="status")
                        preview = gr.Image(label="Preview", type="pil", format="png", height=280,
                                           interactive=False, buttons=["fullscreen"], elem_id="preview")
                        final = gr.Image(label="Final image", type="filepath", format="png", height=280,
                                         interactive=False, buttons=["download", "fullscreen"], elem_id="final")
            with gr.Tab("Past runs", id="gallery"):
                refresh_button = gr.Button("Refresh", elem_id="refresh")
                past = gr.Gallery(first_items, label=f"Runs in {outputs_root}", columns=6, height="auto",
                                  object_fit="contain", buttons=["download", "fullscreen"], elem_id="gallery")
                settings = gr.Code("", language="yaml", label="Settings of the selected run", elem_id="settings")
                with gr.Row():
                    rerun_button = gr.Button("Run again", variant="primary", elem_id="rerun")
                    continue_past_button = gr.Button("Continue this run", elem_id="continue-past")
                gallery_message = gr.Markdown("", elem_id="gallery-message")
            if video_available():
                from .video_tab import build_video_tab

                build_video_tab(gr, workers, outputs_root)

        form_inputs = [prompts, preset_box, steps, width, height, seed, cutn, init_image, image_prompts,
                       image_weight, extra]

        def fill_from_preset(name):
            try:
                values = form_defaults(name)
            except UserError as exc:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), error_message(str(exc))
            return values["steps"], values["width"], values["height"], values["seed"], values["cutn"], ""

        def submit(*values):
            try:
                config = config_from_form(Form(*values), outputs_root, uploads)
                job = workers.submit(Job(config, preview_every=preview_every))
            except UserError as exc:
                return None, error_message(str(exc)), ""
            return job.id, "", "waiting"

        def submit_job(make_job):
            try:
                job = workers.submit(make_job())
            except UserError as exc:
                return None, error_message(str(exc)), ""
            return job.id, "", "waiting"

        def watch(current_id):
            """Stream the job's progress until it ends; then the final image and the gallery."""
            job = workers.get(current_id)
            if job is None:  # nothing was started (bad input): leave the page as it is
                yield tuple(gr.skip() for _ in watch_outputs)  # a generator that yields nothing clears them
                return
            version, shown_step = -1, None
            while True:
                version = job.wait_for_change(version, POLL_SECONDS)
                preview_image = gr.skip()
                if job.preview is not None and job.preview.step != shown_step:
                    preview_image, shown_step = job.preview.image, job.preview.step
                if job.finished:
                    break
                yield preview_image, status_text(job, workers.position(job)), gr.skip(), gr.skip(), \
                    gr.skip(), gr.skip(), gr.skip()
            items, paths = gallery_items(outputs_root)
            final_image = str(job.final_path) if job.final_path and job.status in (DONE, STOPPED) else gr.skip()
            yield preview_image, status_text(job, -1), final_image, \
                error_message(job.error) if job.status == FAILED else "", \
                items, paths, str(job.run_dir) if job.run_dir else gr.skip()

        def stop(current_id):
            job = workers.get(current_id)
            if job is None or job.finished:
                return "Nothing is running."
            job.request_stop()
            return ""

        def continue_last(run_dir, steps_value):
            if not run_dir:
                return None, error_message("no run to continue yet: Start one, then Stop it"), ""
            return submit_job(lambda: continue_job(run_dir, _steps(steps_value), preview_every))

        def refresh():
            items, paths = gallery_items(outputs_root)
            return items, paths

        def select_run(paths, event: gr.SelectData):
            index = event.index if isinstance(event.index, int) else None
            if index is None or not paths or index >= len(paths):
                return None, ""
            run = gallery.read_run(paths[index])
            return (paths[index], gallery.settings_text(run)) if run else (None, "")

        def rerun(path):
            run = gallery.read_run(path) if path else None
            if run is None:
                return None, gr.skip(), error_message("select a run in the gallery first")
            job_value, text, _ = submit_job(lambda: Job(gallery.rerun_config(run, outputs_root),
                                                        preview_every=preview_every))
            return job_value, gr.Tabs(selected="generate") if job_value else gr.skip(), text

        def continue_past(path):
            run = gallery.read_run(path) if path else None
            if run is None:
                return None, gr.skip(), error_message("select a run in the gallery first")
            job_value, text, _ = submit_job(lambda: continue_job(run.run_dir, None, preview_every))
            return job_value, gr.Tabs(selected="generate") if job_value else gr.skip(), text

        watch_outputs = [preview, status, final, message, past, gallery_paths, last_run]
        fast = dict(concurrency_limit=None, show_progress="hidden")  # runs queue in Workers, not here
        preset_box.change(fill_from_preset, preset_box, [steps, width, height, seed, cutn, message], **fast)
        # Named API endpoints: what gradio_client callers (and the tests) use to drive the page.
        start_button.click(submit, form_inputs, [job_id, message, status], api_name="start", **fast) \
            .then(watch, job_id, watch_outputs, api_name="watch", **fast)
        stop_button.click(stop, job_id, message, **fast)
        continue_button.click(continue_last, [last_run, steps], [job_id, message, status], **fast) \
            .then(watch, job_id, watch_outputs, **fast)
        refresh_button.click(refresh, None, [past, gallery_paths], **fast)
        past.select(select_run, gallery_paths, [selected, settings], **fast)
        rerun_button.click(rerun, selected, [job_id, tabs, gallery_message], **fast) \
            .then(watch, job_id, watch_outputs, **fast)
        continue_past_button.click(continue_past, selected, [job_id, tabs, gallery_message], **fast) \
            .then(watch, job_id, watch_outputs, **fast)
    return app


def _steps(value) -> int | None:
    from .forms import whole_number

    return whole_number("steps", value, 1)


def video_available() -> bool:
    """The Video tab appears when vqclip.video (animate, interpolate) is part of this install."""
    import importlib.util

    try:
        return importlib.util.find_spec("vqclip.video.jobs") is not None
    except ImportError:
        return False


def serve(host: str = "127.0.0.1", port: int = 7860, *, auth: list[tuple[str, str]] | None = None,
          no_auth: bool = False, preset: str = "shapes", outputs_root: str | Path = "outputs",
          preview_every: int = 5, block: bool = True):
    """Start the page on host:port (loopback unless asked otherwise; never a public share link).

    auth: (user, password) pairs the page asks for; beyond loopback it is required unless
    no_auth=True says on purpose that anyone who can reach the address may use the page.
    block=False returns (app, workers) with the server running in the background; call
    `app.close()` and `workers.close()` to stop it.
    """
    check_listening(host, auth, no_auth)
    import_gradio()
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, not {port}")
    workers = Workers()
    app = build_app(workers, preset=preset, outputs_root=outputs_root, preview_every=preview_every)
    app.queue(default_concurrency_limit=None)
    Path(outputs_root).mkdir(parents=True, exist_ok=True)
    try:
        # Gradio's file route then serves the outputs folder and its upload cache (and an examples
        # cache in the working directory, unused here), nothing else; files reach it resolved.
        app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                   auth=list(auth) if auth else None,
                   prevent_thread_lock=True, allowed_paths=[str(Path(outputs_root).resolve())],
                   ssr_mode=False, footer_links=[], css=CSS, quiet=True)
    except OSError as exc:
        workers.close(timeout=5)
        raise UserError(f"cannot listen on {host}:{port} ({' '.join(str(exc).split())}): choose another --port") \
            from None
    if not block:
        return app, workers
    print(f"vqclip ui: open http://{'localhost' if is_loopback(host) else host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        app.block_thread()  # until Ctrl-C
    finally:
        workers.close(timeout=5)
    return None
