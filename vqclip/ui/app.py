"""The web page: `vqclip ui` (Gradio, the optional extra `ui`).

*Generate*: prompts, preset and the main settings, Start / Stop / Continue / Steer, a live
preview with the step and loss, the final image. *Past runs*: the outputs folder's runs with their
settings, run again or continue with one click. *Video* (when vqclip.video is installed): animate
and interpolate, in video_tab.py. Runs go to `Workers` (one per device, queued), so
a handler only submits or watches and the page never waits on a run. Bad input comes back as a
message on the page (one line, the same text the command line prints), never a traceback.
Whoever opens the page is not trusted with the server's files (access.py): its settings may name
files under the outputs folder or its own uploads only, and beyond loopback it asks for a login.

`build_app` builds each tab with its own function, then wires the tab's events; each handler is a
plain function of the `Page` (the queue and the folders) and the event's inputs.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..config import preset_names, read_yaml
from ..controls.symmetry import SYMMETRIES
from ..errors import UserError
from . import gallery
from .access import check_listening, is_loopback
from .forms import Form, config_from_form, form_defaults
from .mask_editor import EditControls, build_edit_controls, wire_edit_controls
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


@dataclass(frozen=True)
class Page:
    """What the page's handlers share: the run queue and the folders the page may use."""

    workers: Workers
    outputs_root: str
    uploads: str  # Gradio's upload folder: the one place outside outputs_root whose files the page may name
    preview_every: int


# Gradio components: gradio itself is imported on first use, so these are typed loosely.
@dataclass(frozen=True)
class GenerateTab:
    form: list[Any]  # the Form's fields, in its order (what Start sends)
    preset: Any
    preset_fields: list[Any]  # steps, width, height, seed, cutn: what choosing a preset fills in
    steps: Any
    start: Any
    stop: Any
    continue_last: Any
    steer: Any
    steer_fields: list[Any]  # new prompts, new learning rate
    message: Any
    status: Any
    preview: Any
    final: Any
    edit: EditControls  # the init image, its painted mask, outpainting
    job_id: Any  # State: the job this browser tab started last
    last_run: Any  # State: that job's run folder, for Continue


@dataclass(frozen=True)
class PastRunsTab:
    refresh: Any
    gallery: Any
    paths: Any  # State: the image paths in the gallery's order
    selected: Any  # State: the image path of the run clicked last
    settings: Any
    rerun: Any
    continue_run: Any
    message: Any


FAST = dict(concurrency_limit=None, show_progress="hidden")  # runs queue in Workers, not in Gradio's queue


def build_app(workers: Workers, *, preset: str = "shapes", outputs_root: str | Path = "outputs",
              preview_every: int = 5):
    """The Gradio Blocks of the page; `serve()` launches it."""
    gr = import_gradio()
    names = preset_names()
    if preset not in names:
        raise UserError(f"unknown preset {preset!r}; valid choices: {', '.join(names)}")
    page = Page(workers, str(outputs_root), upload_folder(), preview_every)
    with gr.Blocks(title="vqclip", analytics_enabled=False) as app:
        gr.Markdown("## vqclip — text to image by VQGAN+CLIP")
        with gr.Tabs(selected="generate") as tabs:
            generate = build_generate_tab(gr, names, preset)
            past = build_past_runs_tab(gr, page.outputs_root)
            if video_available():
                from .video_tab import build_video_tab

                build_video_tab(gr, workers, page.outputs_root)
        # What watching a run updates: the Generate tab, and the gallery once the run ends.
        watch_outputs = [generate.preview, generate.status, generate.final, generate.message, past.gallery,
                         past.paths, generate.last_run]
        wire_generate_tab(gr, page, generate, watch_outputs)
        wire_past_runs_tab(gr, page, past, generate.job_id, tabs, watch_outputs)
    return app


def build_generate_tab(gr, names: list[str], preset: str) -> GenerateTab:
    """Prompts, preset and the main settings, Start / Stop / Continue; the live preview and the final image."""
    defaults = form_defaults(preset)
    with gr.Tab("Generate", id="generate"), gr.Row():
        with gr.Column(scale=1):
            prompts = gr.Textbox(label="Prompts (one per line; text:weight, fog:-0.5)", lines=3,
                                 placeholder="a red triangle on a black background", elem_id="prompts")
            preset_box = gr.Dropdown(names, value=preset, label="Preset", elem_id="preset")
            with gr.Row():
                steps = gr.Number(defaults["steps"], label="Steps", elem_id="steps")
                seed = gr.Number(defaults["seed"], label="Seed (empty: random)", elem_id="seed")
                cutn = gr.Number(defaults["cutn"], label="Cutouts", elem_id="cutn")
            with gr.Row():
                width = gr.Number(defaults["width"], label="Width", elem_id="width")
                height = gr.Number(defaults["height"], label="Height", elem_id="height")
            edit = build_edit_controls(gr)
            with gr.Accordion("Image prompts and more settings", open=False):
                image_prompts = gr.File(label="Image prompts", file_count="multiple", file_types=["image"],
                                        type="filepath")
                image_weight = gr.Number(1.0, label="Image prompt weight")
                with gr.Row():
                    tile = gr.Checkbox(False, label="Seamless tile", elem_id="tile")
                    symmetry = gr.Dropdown(list(SYMMETRIES), value="none", label="Symmetry", elem_id="symmetry")
                palette = gr.Textbox(label="Palette (hex colours, comma-separated)", placeholder="#dc1e1e, #1e46dc",
                                     elem_id="palette")
                extra = gr.Textbox(label="More settings (key=value per line)", lines=3,
                                   placeholder="lr=0.2\ninit.weight=0.5", elem_id="extra")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="start")
                stop = gr.Button("Stop", elem_id="stop")
                continue_last = gr.Button("Continue", elem_id="continue")
            with gr.Accordion("Steer the run while it goes", open=False):
                steer_prompts = gr.Textbox(label="New prompts (one per line; empty: keep them)", lines=2,
                                           elem_id="steer-prompts")
                steer_lr = gr.Number(None, label="Learning rate (empty: keep it)", elem_id="steer-lr")
                steer = gr.Button("Apply from the next step", elem_id="steer")
            message = gr.Markdown("", elem_id="message")
        with gr.Column(scale=1):
            status = gr.Markdown("", elem_id="status")
            preview = gr.Image(label="Preview", type="pil", format="png", height=280, interactive=False,
                               buttons=["fullscreen"], elem_id="preview")
            final = gr.Image(label="Final image", type="filepath", format="png", height=280, interactive=False,
                             buttons=["download", "fullscreen"], elem_id="final")
    return GenerateTab(
        form=[prompts, preset_box, steps, width, height, seed, cutn, edit.editor, image_prompts, image_weight, extra,
              edit.invert, edit.outpaint, tile, symmetry, palette], edit=edit,
        preset=preset_box, preset_fields=[steps, width, height, seed, cutn], steps=steps, start=start, stop=stop,
        continue_last=continue_last, steer=steer, steer_fields=[steer_prompts, steer_lr], message=message,
        status=status, preview=preview, final=final,
        job_id=gr.State(None), last_run=gr.State(None))


def build_past_runs_tab(gr, outputs_root: str) -> PastRunsTab:
    """The outputs folder's runs, the settings of the one clicked, Run again / Continue this run."""
    items, paths = gallery_items(outputs_root)
    with gr.Tab("Past runs", id="gallery"):
        refresh = gr.Button("Refresh", elem_id="refresh")
        shown = gr.Gallery(items, label=f"Runs in {outputs_root}", columns=6, height="auto", object_fit="contain",
                           buttons=["download", "fullscreen"], elem_id="gallery")
        settings = gr.Code("", language="yaml", label="Settings of the selected run", elem_id="settings")
        with gr.Row():
            rerun = gr.Button("Run again", variant="primary", elem_id="rerun")
            continue_run = gr.Button("Continue this run", elem_id="continue-past")
        message = gr.Markdown("", elem_id="gallery-message")
    return PastRunsTab(refresh=refresh, gallery=shown, paths=gr.State(paths), selected=gr.State(None),
                       settings=settings, rerun=rerun, continue_run=continue_run, message=message)


def wire_generate_tab(gr, page: Page, generate: GenerateTab, watch_outputs: list) -> None:
    """The Generate tab's events. The api_names are what gradio_client callers (and the tests) use."""
    watch = partial(watch_job, gr, page)
    submitted = [generate.job_id, generate.message, generate.status]
    generate.preset.change(partial(fill_from_preset, gr), generate.preset, [*generate.preset_fields, generate.message],
                           api_name="fill_from_preset", **FAST)
    generate.start.click(partial(start_run, page), generate.form, submitted, api_name="start", **FAST) \
        .then(watch, generate.job_id, watch_outputs, api_name="watch", **FAST)
    wire_edit_controls(generate.edit, FAST)
    generate.stop.click(partial(stop_job, page), generate.job_id, generate.message, api_name="stop", **FAST)
    generate.steer.click(partial(steer_job, page), [generate.job_id, *generate.steer_fields], generate.message,
                         api_name="steer", **FAST)
    generate.continue_last.click(partial(continue_last_run, page), [generate.last_run, generate.steps], submitted,
                                 api_name="continue_last", **FAST) \
        .then(watch, generate.job_id, watch_outputs, api_name="watch", **FAST)  # Gradio names it watch_1


def wire_past_runs_tab(gr, page: Page, past: PastRunsTab, job_id, tabs, watch_outputs: list) -> None:
    """The Past runs tab's events; a run started here is watched on the Generate tab."""
    def select_run(paths, event: gr.SelectData):  # Gradio hands over the click by this type hint
        return selected_run(paths, event.index)

    watch = partial(watch_job, gr, page)
    submitted = [job_id, tabs, past.message]
    past.refresh.click(partial(refresh_gallery, page), None, [past.gallery, past.paths], api_name="refresh", **FAST)
    past.gallery.select(select_run, past.paths, [past.selected, past.settings], api_name="select_run", **FAST)
    past.rerun.click(partial(submit_past_run, gr, page, rerun_job), past.selected, submitted, api_name="rerun",
                     **FAST) \
        .then(watch, job_id, watch_outputs, api_name="watch", **FAST)
    past.continue_run.click(partial(submit_past_run, gr, page, continue_past_job), past.selected, submitted,
                            api_name="continue_past", **FAST) \
        .then(watch, job_id, watch_outputs, api_name="watch", **FAST)


# --- the handlers: plain functions of the page and the inputs, bound with partial above ---------


def fill_from_preset(gr, name: str):
    """The preset's steps, width, height, seed and cutouts into the form (and clear the message)."""
    try:
        values = form_defaults(name)
    except UserError as exc:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), error_message(str(exc))
    return values["steps"], values["width"], values["height"], values["seed"], values["cutn"], ""


def submit(page: Page, make_job: Callable[[], Job]) -> tuple:
    """Queue the job `make_job` builds: (job id, message, status), or the mistake as the message."""
    try:
        job = page.workers.submit(make_job())
    except UserError as exc:
        return None, error_message(str(exc)), ""
    return job.id, "", "waiting"


def start_run(page: Page, *form_values):
    """Start: a new run from the form's fields (in Form's order)."""
    return submit(page, lambda: Job(config_from_form(Form(*form_values), page.outputs_root, page.uploads),
                                    preview_every=page.preview_every))


def continue_last_run(page: Page, run_dir: str | None, steps_value):
    """Continue: the run this browser tab watched last, to the Steps field's count."""
    if not run_dir:
        return None, error_message("no run to continue yet: Start one, then Stop it"), ""
    return submit(page, lambda: continue_job(run_dir, _steps(steps_value), page.preview_every))


def stop_job(page: Page, job_id) -> str:
    job = page.workers.get(job_id)
    if job is None or job.finished:
        return "Nothing is running."
    job.request_stop()
    return ""


def steer_job(page: Page, job_id, prompts_text: str | None, lr) -> str:
    """Steer: the running job's prompts (one per line) and learning rate, from its next step."""
    job = page.workers.get(job_id)
    if job is None or job.finished:
        return "Nothing is running."
    lines = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()]
    try:
        job.steer({"prompts": lines or None, "lr": None if lr in (None, "") else lr})
    except UserError as exc:
        return error_message(str(exc))
    return "The change applies from the next step; the run's config records it."


def watch_job(gr, page: Page, job_id):
    """Stream the job's progress until it ends; then the final image and the gallery.

    Yields (preview, status, final image, message, gallery items, gallery paths, run folder).
    """
    job = page.workers.get(job_id)
    if job is None:  # nothing was started (bad input): leave the page as it is
        yield (gr.skip(),) * 7  # a generator that yields nothing would clear them
        return
    version, shown_step = -1, None
    while True:
        version = job.wait_for_change(version, POLL_SECONDS)
        preview_image = gr.skip()
        if job.preview is not None and job.preview.step != shown_step:
            preview_image, shown_step = job.preview.image, job.preview.step
        if job.finished:
            break
        yield (preview_image, status_text(job, page.workers.position(job))) + (gr.skip(),) * 5
    items, paths = gallery_items(page.outputs_root)
    final_image = str(job.final_path) if job.final_path and job.status in (DONE, STOPPED) else gr.skip()
    yield preview_image, status_text(job, -1), final_image, \
        error_message(job.error) if job.status == FAILED else "", \
        items, paths, str(job.run_dir) if job.run_dir else gr.skip()


def refresh_gallery(page: Page):
    return gallery_items(page.outputs_root)


def selected_run(paths: list[str], index) -> tuple[str | None, str]:
    """(image path, settings as YAML) of the gallery item at `index`, or (None, "")."""
    if not isinstance(index, int) or not paths or index >= len(paths):
        return None, ""
    run = gallery.read_run(paths[index])
    return (paths[index], gallery.settings_text(run)) if run else (None, "")


def submit_past_run(gr, page: Page, make_job: Callable[[Page, gallery.PastRun], Job], path: str | None):
    """Run again / Continue this run: queue the selected run's job, then show the Generate tab to watch it."""
    run = gallery.read_run(path) if path else None
    if run is None:
        return None, gr.skip(), error_message("select a run in the gallery first")
    job_id, message, _ = submit(page, lambda: make_job(page, run))
    return job_id, gr.Tabs(selected="generate") if job_id else gr.skip(), message


def rerun_job(page: Page, run: gallery.PastRun) -> Job:
    """The same settings, seed included, as a new run."""
    return Job(gallery.rerun_config(run, page.outputs_root), preview_every=page.preview_every)


def continue_past_job(page: Page, run: gallery.PastRun) -> Job:
    return continue_job(run.run_dir, None, page.preview_every)


def _steps(value) -> int | None:
    from .forms import whole_number

    return whole_number("steps", value, 1)


def video_available() -> bool:
    """The Video tab appears when vqclip.video (animate, interpolate) is part of this install."""
    import importlib.util

    try:
        return importlib.util.find_spec("vqclip.video.commands") is not None
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
