"""The main job: a text prompt (and a config) in, an image and its run folder out.

`generate()` is the Python API; `run()` does the work on a resolved config with optional
pre-loaded models (scripts that make many images load the models once). The pieces, in order:
resolve the config, load the models, build the objective, choose the initial latent, optimise
with a callback that writes progress, logs and state, then rank the candidates and write them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import secrets
import shutil
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig

from . import loading, outputs
from .config import build_config, read_yaml, to_dict
from .controls.canvas import WindowedDecoder, check_window, fused_attention
from .controls.steering import check_change, lr_after, steered_timeline
from .errors import UserError
from .interrupt import Interrupted, stop_on_signals
from .loading import Models
from .machine.precision import autocast, in_autocast, resolve_precision
from .machine.threads import run_threads
from .mask import Edit, plan_edit
from .objective import Objective
from .optimize import NumericalError, Step, make_optimizer, make_scheduler, optimize
from .paths import check_paths
from .prompts import (
    PromptTimeline,
    parse_image_prompt,
    parse_prompts,
    split_story,
    timeline_from_schedule,
    timeline_from_story,
)
from .rng import restore_rng, seed_everything
from .run_files import GenerationResult, RunWriter
from .start import check_size, initial_z

log = logging.getLogger(__name__)


def build_timeline(config: DictConfig) -> PromptTimeline | None:
    """The prompts at each step: the schedule, a story or plain prompts, then the steering's changes."""
    return steered_timeline(_planned_timeline(config), config.steering)


def _planned_timeline(config: DictConfig) -> PromptTimeline | None:
    if config.schedule:
        return timeline_from_schedule(dict(config.schedule))
    texts = [text for text in config.prompts if text.strip()]
    if not texts:
        return None
    # Prompts with "^" tell a story; the others hold for the whole run, beside each phrase.
    constant = tuple(spec for text in texts if "^" not in text for spec in parse_prompts(text))
    if not any("^" in text for text in texts):
        return PromptTimeline([(0, constant)])
    phrases = story_phrases(config)
    every = config.story_every or story_every_for(config.steps, len(phrases))
    shown = min(len(phrases), -(-config.steps // every))
    if 0 < shown < len(phrases):
        log.warning("story_every=%d with %d steps shows only %d of the %d story phrases: raise steps, lower "
                    "story_every, or leave it unset to split the steps evenly", every, config.steps, shown,
                    len(phrases))
    timeline = timeline_from_story(phrases, every)
    return PromptTimeline([(start, specs + constant) for start, specs in timeline.entries])


def story_phrases(config: DictConfig) -> list[str]:
    return [phrase for text in config.prompts if "^" in text for phrase in split_story(text)]


def story_every_for(steps: int, phrases: int) -> int:
    """story_every unset: the steps split evenly between the phrases (the last takes any remainder)."""
    return max(1, steps // max(1, phrases))


def generate(prompt: str | list[str] | None = None, *, preset: str | None = "default", models: Models | None = None,
             callback=None, **overrides) -> GenerationResult:
    """Generate an image: `vqclip.generate("a red circle", preset="shapes", steps=60, seed=3)`.

    Keyword arguments are config keys (nested ones as dicts: `init={"weight": 0.5}`).
    `callback(step: vqclip.optimize.Step)` sees every step and may return False to stop.
    """
    if prompt is not None:
        overrides["prompts"] = [prompt] if isinstance(prompt, str) else list(prompt)
    return run(build_config(preset, overrides), models=models, callback=callback)


def generate_from_cli(preset: str | None, overrides: dict, dotlist: list[str],
                      from_image: str | None = None, resume_dir: str | None = None) -> GenerationResult:
    if resume_dir:
        return resume(resume_dir, overrides, dotlist)
    if from_image:  # run again with the stored settings; where to write is chosen anew
        stored = outputs.read_metadata(from_image).get("config")
        if not isinstance(stored, dict):
            raise UserError(f"{from_image} holds no vqclip config to run again")
        for key in ("run_dir", "output"):
            stored.pop(key, None)
        config = build_config(None, {**stored, **overrides}, dotlist)
    else:
        config = build_config(preset or "default", overrides, dotlist)
    return run(config)


def resume(run_dir: str | Path, overrides: dict | None = None, dotlist: list[str] | None = None,
           models: Models | None = None, callback=None) -> GenerationResult:
    """Continue a run from its folder's state.pt (or state.prev.pt if the newest is damaged).

    With the same settings the result is the same, pixel for pixel, as a run never interrupted:
    the state holds z, the optimiser, the schedule and every random stream. `overrides` may
    extend the run (`steps`); other changes are allowed but make it a different run.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir} does not exist: a run stopped before its folder was made has nothing to "
                        "resume; start it again")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a vqclip run folder (no config.yaml): give the folder of a run")
    stored = read_yaml(run_dir / "config.yaml")
    stored["run_dir"] = str(run_dir)
    config = build_config(None, {**stored, **(overrides or {})}, dotlist)
    state = outputs.load_state_or_previous(run_dir / "state.pt")
    finished = _finished_result(run_dir, state, config.steps)
    if finished is not None:
        log.warning("%s has done %d steps, and %d were asked: nothing to continue (give --steps above %d to "
                    "extend it)", run_dir, finished.steps_done, config.steps, finished.steps_done)
        return finished
    return run(config, models=models, callback=callback, state=state)


def _finished_result(run_dir: Path, state: dict, steps: int) -> GenerationResult | None:
    """The run as its folder holds it, when it has done `steps` or more and wrote its final image then."""
    done, final = int(state["step"]), run_dir / "final.png"
    if done < steps or not final.is_file():
        return None
    metadata = outputs.read_metadata(final)
    if metadata.get("step") != done:  # stopped after its last state, before final.png: finish it
        return None
    return GenerationResult(images=outputs.load_image(final, what="final image"), z=state["z"],
                            scores=[metadata.get("score")], config=metadata.get("config", {}), run_dir=run_dir,
                            final_path=final, steps_done=done)


def run(config: DictConfig, models: Models | None = None, callback=None,
        state: dict | None = None) -> GenerationResult:
    """Generate with a resolved config (from `state`, when resuming). Writes the run folder.

    `callback(step info)` may return False to stop after that step, or a dict such as
    {"prompts": "a | b:0.5", "lr": 0.05} to steer the run from its next step (recorded as
    `steering`). The caller's config is left as given; the one the run resolved (seed, size,
    threads, steering) is in the result and the run folder.
    """
    config = copy.deepcopy(config)
    with run_threads(config.threads, quiet=config.quiet) as plan:
        config.threads = plan.threads  # recorded: CPU results depend on it, --from and --resume repeat it
        return _run(config, models, callback, state)


def _run(config: DictConfig, models: Models | None, callback, state: dict | None) -> GenerationResult:
    if config.seed is None:
        config.seed = secrets.randbelow(2**31)  # recorded, so the run can be repeated
    if config.story_every is None and not config.schedule and story_phrases(config):
        # recorded, so that a resumed or extended run keeps the story's pace
        config.story_every = story_every_for(config.steps, len(story_phrases(config)))
    timeline = build_timeline(config)
    check_paths(config, starting=state is None)  # a resumed run starts from its state, not its init files
    check_output_path(config.output)
    models = models or loading.load_models(config)
    dtype = resolve_precision(config.precision, models.device)
    compute = models.in_precision(dtype)  # the frozen networks, in the step's precision
    auto_size = config.size == "auto"
    if auto_size:  # measured before the run's random streams are seeded
        config.size, config.cutn = _auto_size(config, models, compute, timeline, dtype)
    size = (int(config.size[0]), int(config.size[1]))
    check_size(size, models.vqgan.factor)
    window = check_window(config.window, size, models.vqgan)
    edit = plan_edit(config, size, models.vqgan.factor, auto_size=auto_size)  # every check before a file is written
    size = edit.size if edit is not None else size
    generator = seed_everything(config.seed)
    with _advice_on_out_of_memory(config, models, compute, timeline, dtype, size, "while making the initial latent"), \
            _attending(config, models, compute):
        z, anchor, edit = _start(config, models, size, generator, timeline, edit, state)
    objective = _objective(config, compute.clip, timeline, generator, anchor, edit=edit)
    z = z.detach().clone().requires_grad_(True)
    if edit is not None:
        z.register_hook(edit.mask_gradient)  # the kept cells never move
    optimizer = make_optimizer(config.optimizer, [z], config.lr, dict(config.optimizer_args))
    scheduler = make_scheduler(config.lr_schedule, optimizer, config.steps, drops=list(config.lr_drops),
                               factor=config.lr_drop_factor, patience=config.lr_patience)
    start_step = 0
    if state is not None:
        start_step = int(state["step"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], generator)

    created = not (config.run_dir and Path(config.run_dir).exists())  # a folder the user had is never removed
    run_dir = outputs.prepare_run_dir(config.run_dir) if config.run_dir else \
        outputs.new_run_dir(config.outputs_root, _title(config))
    outputs.write_yaml(run_dir / "config.yaml", to_dict(config))
    vqgan = models.vqgan
    decoder = _decoder(vqgan, compute.vqgan, config, size, window, generator)
    if window and state is not None:
        decoder.restore(state.get("window"), models.device)
    writer = RunWriter(run_dir, config, optimizer, scheduler, generator, anchor, start_step, edit=edit,
                       window=decoder if window else None)

    _set_lr(optimizer, lr_after(config.steering, start_step))  # resumed at a step the run was steered at

    with stop_on_signals() as stop:
        def on_step(info: Step):
            shown = dataclasses.replace(info, image=decoder.picture) if window else info
            answer = _steered(callback(shown) if callback else None, info.step, config, run_dir, objective)
            _set_lr(optimizer, lr_after(config.steering, info.step))
            writer.on_step(info)
            if stop:
                writer.save_state(info.z, info.step)
                raise Interrupted(f"stopped by signal {stop.signal} after step {info.step}; "
                                  f"continue with: vqclip --resume {run_dir}")
            return answer

        try:
            with _removed_without_a_step(run_dir if created else None, writer), _decoding(config, models, compute), \
                    _advice_on_out_of_memory(config, models, compute, timeline, dtype, size, "while optimising"):
                steps_done = optimize(z, in_autocast(decoder, models.device, dtype),
                                      in_autocast(objective, models.device, dtype),
                                      steps=config.steps, optimizer=optimizer, scheduler=scheduler,
                                      z_min=vqgan.z_min, z_max=vqgan.z_max, start_step=start_step,
                                      callback=on_step, disable=True if config.quiet else None)
        except NumericalError:
            writer.save_last_good()
            raise
    with _decoding(config, models, compute):
        return writer.finish(z.detach(), vqgan, objective, steps_done)


def _steered(answer, step: int, config: DictConfig, run_dir: Path, objective: Objective):
    """The callback's answer: a dict steers the run from its next step (recorded in the config, so
    that --from and --resume steer it alike); anything else goes back to the loop as it is."""
    if not isinstance(answer, dict):
        return answer
    config.steering[step] = check_change(answer)
    outputs.write_yaml(run_dir / "config.yaml", to_dict(config))
    objective.timeline = build_timeline(config)
    return None


def _set_lr(optimizer: torch.optim.Optimizer, lr: float | None) -> None:
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr


@contextlib.contextmanager
def _decoding(config: DictConfig, models: Models, compute: Models):
    """How the run's VQGANs decode: tile=true pads circularly (vqclip.controls.tiling), and see
    `_attending`."""
    from .controls.tiling import circular_padding

    with circular_padding(models.vqgan, compute.vqgan) if config.tile else contextlib.nullcontext(), \
            _attending(config, models, compute):
        yield


def _attending(config: DictConfig, models: Models, compute: Models):
    """A window's large canvas is encoded and decoded without the attention matrix (vqclip.controls.canvas)."""
    return fused_attention(models.vqgan, compute.vqgan) if config.window is not None else contextlib.nullcontext()


def _start(config: DictConfig, models: Models, size: tuple[int, int], generator: torch.Generator, timeline,
           edit: Edit | None, state: dict | None) -> tuple[torch.Tensor, torch.Tensor | None, Edit | None]:
    """The latent the optimisation starts from, the anchor it is pulled toward, and the edit with the
    pixels it keeps: made afresh, or (resuming) as the state holds them."""
    edit = edit.to(models.device) if edit is not None else None
    if state is not None:
        z, anchor = state["z"].to(models.device), state.get("anchor")
        if edit is not None:
            if state.get("mask_reference") is None:
                raise UserError("this run was not a masked edit, and a mask cannot be added while resuming it: start "
                                "a new run with --init-image and the mask")
            edit.reference = state["mask_reference"].to(models.device)
        return z, anchor.to(models.device) if anchor is not None else None, edit

    def start(mode: str) -> torch.Tensor:
        init = copy.deepcopy(config.init)
        init.mode = mode
        return initial_z(init, models.vqgan, size, config.batch_size, generator, models.device, prior=models.prior,
                         clip=models.clip, text=_prior_text(timeline), picture=edit.picture if edit else None)

    z = start(config.init.mode)
    if config.tile and config.init.mode == "prior":
        from .controls.tiling import roll_to_quiet_edges

        z = roll_to_quiet_edges(z, models.vqgan)
    if edit is not None:
        edit.reference = edit.picture if edit.picture is not None else _decoded(models.vqgan, z)  # per candidate
        if config.mask.fill != "image":
            z = edit.fill(z, start(config.mask.fill))
    anchor = None
    if config.init.weight:
        anchor = z.detach().clone() if config.init.anchor == "z0" else torch.zeros_like(z)
    return z, anchor, edit


def _decoded(vqgan, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vqgan.decode(vqgan.quantize(z)).float()


@contextlib.contextmanager
def _removed_without_a_step(run_dir: Path | None, writer: RunWriter):
    """A run folder this run created is removed when the run fails before its first step: it
    holds nothing a user could want (config.yaml and an empty log), and resuming it cannot work."""
    try:
        yield
    except BaseException:
        if run_dir is not None and writer.last_good is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def _advice_on_out_of_memory(config: DictConfig, models: Models, compute: Models, timeline, dtype,
                             size: tuple[int, int], doing: str):
    """An allocation failure (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError) becomes a
    one-line UserError that says which size fits, predicted by the memory model of size=auto."""
    from .machine.memory import is_out_of_memory

    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        traceback.clear_frames(error.__traceback__)  # free the failed step's tensors before the probes
        raise _out_of_memory_error(config, models, compute, timeline, dtype, size, doing) from None


def _out_of_memory_error(config: DictConfig, models: Models, compute: Models, timeline, dtype,
                         size: tuple[int, int], doing: str) -> UserError:
    from .machine.memory import is_out_of_memory, largest_size_like

    what = (f"out of memory on {models.device} {doing} at size {size[0]}×{size[1]} with cutn {config.cutn} "
            f"and batch {config.batch_size}")
    if config.window is not None and doing == "while optimising":  # the memory model predicts whole steps
        return UserError(f"{what} and window {config.window[0]}×{config.window[1]}: try a smaller window, cutn or "
                         "--batch")
    budget = _memory_budget(config, models.device)
    try:
        model = _memory_model(config, models, compute, timeline, dtype)(int(config.cutn))
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        return UserError(f"{what}; not even small probe steps fit: free memory, or try a smaller cutn, --batch "
                         "or VQGAN")
    fits = largest_size_like(model, size, models.vqgan.factor, budget)
    available = f"the {budget / 2**20:.0f} MB available"
    window_hint = f"; or keep the size and improve it a window at a time: window=[{fits[0]},{fits[1]}]" \
        if fits is not None and config.window is None and doing == "while optimising" else ""
    if fits is None:
        return UserError(f"{what}: no smaller size of this shape fits {available}; try a smaller cutn or --batch")
    return UserError(f"{what}: {fits[0]}×{fits[1]} should fit {available} (--size {fits[0]} {fits[1]}, or "
                     f"size=auto{window_hint}), or try a smaller cutn or --batch")


def _objective(config: DictConfig, clip, timeline, generator: torch.Generator, anchor=None,
               cutn: int | None = None, edit: Edit | None = None) -> Objective:
    from .controls.hold import hold_from_config
    from .controls.palette import palette_from_config
    from .cutouts import build_augmentations

    return Objective(clip, timeline, image_prompts=list(config.image_prompts), noise_prompts=list(config.noise_prompts),
                     cutn=cutn or config.cutn, cut_pow=config.cut_pow, cut_mode=config.cut_mode,
                     noise_fac=config.noise_fac, augment=build_augmentations(config.augmentations),
                     generator=generator, anchor=anchor, anchor_weight=config.init.weight,
                     anchor_decay=config.init.decay, tv_weight=config.tv_weight,
                     region=edit.region if edit is not None and config.mask.cutouts == "inside" else None,
                     keep=edit.keep_loss if edit is not None else None, tile=config.tile,
                     symmetry=config.symmetry, symmetry_weight=config.symmetry_weight,
                     palette=palette_from_config(config, config.steps), hold=hold_from_config(config))


def _decoder(vqgan, compute_vqgan, config: DictConfig, size: tuple[int, int], window: tuple[int, int] | None = None,
             generator: torch.Generator | None = None):
    """(z, step) → image for the step: quantised (a dVAE: relaxed) by the fp32 model, decoded by the
    compute copy; with a window, the step's window (its `picture`: the latest whole decode)."""
    from .models.dvae import Relaxation

    if window is not None:
        return WindowedDecoder(compute_vqgan, window, config.window_refresh, generator, quantize=vqgan.quantize)

    checkpoint = config.checkpoint_decoder
    if checkpoint is None:  # auto: where the decoder's activations start to dominate memory
        checkpoint = size[0] * size[1] >= CHECKPOINT_FROM_PIXELS
    decode_codes = lambda codes: compute_vqgan.decode(codes, checkpoint=checkpoint)  # noqa: E731
    # The decoder is a fixed graph: worth compiling on a GPU for long runs (the first step compiles).
    if config.compile:
        decode_codes = torch.compile(decode_codes, dynamic=False)
    relaxation = Relaxation(config.relaxation.kind, config.relaxation.temperature, config.relaxation.temperature_end,
                            config.steps, config.seed or 0)
    return lambda latent, step=0: decode_codes(vqgan.relax(latent, step, relaxation))


CHECKPOINT_FROM_PIXELS = 512 * 512


def _auto_size(config: DictConfig, models: Models, compute: Models, timeline, dtype) -> tuple[list[int], int]:
    """size=auto: the largest square (and cutn) whose predicted step fits the memory budget and, on a
    CPU, whose whole run fits time_budget_s."""
    from .machine.memory import auto_size

    budget = _memory_budget(config, models.device)
    model_for_cutn = _memory_model(config, models, compute, timeline, dtype)
    side, cutn = auto_size(model_for_cutn, models.vqgan.factor, budget, int(config.cutn))
    timed = ""
    if models.device.type == "cpu" and config.time_budget_s:
        side, timed = _side_in_time(config, models, compute, timeline, dtype, cutn, side)
    if not config.quiet:
        peak = model_for_cutn(cutn).predict(side, side)
        print(f"size=auto: {side}×{side} with cutn {cutn} ({timed}predicted peak {peak / 2**20:.0f} MB of "
              f"{budget / 2**20:.0f} MB)", flush=True)
    return [side, side], cutn


# The settings that change a step's work on a given machine: a step time measured for them holds
# for every run that shares them (vqclip.machine.step_time).
STEP_KEYS = ("vqgan", "clip", "augmentations", "cut_mode", "cut_pow", "batch_size", "checkpoint_decoder", "compile",
             "relaxation")


def _side_in_time(config: DictConfig, models: Models, compute: Models, timeline, dtype, cutn: int,
                  memory_side: int) -> tuple[int, str]:
    """The largest side up to `memory_side` whose run is predicted to fit time_budget_s on this CPU,
    and what to say of it. The step times are measured once per machine and workload (vqclip.machine.step_time)."""
    from .machine.step_time import MAX_SCALE, cached_step_time, fastest, fit_step_time, largest_side_in_time, machine
    from .models.download import cache_dir

    vqgan, device, factor = models.vqgan, models.device, models.vqgan.factor

    def time_at(side: int) -> float:
        objective = _objective(config, compute.clip, timeline, torch.Generator(device).manual_seed(0), cutn=cutn)
        decode = _decoder(vqgan, compute.vqgan, config, (side, side))
        z = _probe_latent(vqgan, config.batch_size, side, device).requires_grad_(True)

        def step() -> None:
            with autocast(device, dtype):
                loss = sum(objective(decode(z), z, 0).values())
            loss.backward()
            z.grad = None

        return fastest(step)

    settings = to_dict(config)
    key = json.dumps({"machine": machine(), "threads": torch.get_num_threads(), "dtype": str(dtype), "cutn": cutn,
                      **{name: settings.get(name) for name in STEP_KEYS}}, sort_keys=True)
    trained = getattr(vqgan, "trained_size", None) or 256
    max_side = max(factor, min(memory_side, trained * MAX_SCALE // factor * factor))

    def choose(model) -> int:
        return largest_side_in_time(model, factor, int(config.steps), float(config.time_budget_s), max_side,
                                    min_side=min(4 * factor, max_side))

    model, measured = cached_step_time(key, lambda: fit_step_time(time_at, factor, choose), cache_dir())
    side = choose(model)
    seconds = model.predict(side, side)
    limit = ("the memory" if max_side == memory_side else f"{MAX_SCALE}× the VQGAN's trained {trained} px")
    said = (f"predicted {seconds:.2f} s a step, {config.steps} steps ≈ {config.steps * seconds:.0f} s of "
            f"time_budget_s={config.time_budget_s:g}, at most {max_side} px ({limit}); step times "
            + ("measured now" if measured else "as measured before on this machine") + "; ")
    return side, said


def _probe_latent(vqgan, batch: int, side: int, device: torch.device) -> torch.Tensor:
    """The latent of a side × side image of code 0: what size=auto's probe steps run on."""
    grid = side // vqgan.factor
    return vqgan.tokens_to_z(torch.zeros(batch, grid, grid, dtype=torch.long, device=device))


def _memory_budget(config: DictConfig, device: torch.device) -> float:
    from .machine.memory import free_memory_bytes

    return config.memory_budget_mb * 2**20 if config.memory_budget_mb else free_memory_bytes(device)


def _memory_model(config: DictConfig, models: Models, compute: Models, timeline, dtype):
    """cutn → the step's MemoryModel (vqclip.machine.memory), from probe steps at small sizes.

    The decoder is probed once per checkpointing setting the run can use (auto switches at
    CHECKPOINT_FROM_PIXELS), uncompiled (a compiled decoder needs no more); the objective
    once per cutn asked.
    """
    from .machine.memory import MemoryModel, fit_decoder_memory, fit_objective_memory, probe_decoder, probe_objective

    vqgan, device = models.vqgan, models.device

    def latent(side: int) -> torch.Tensor:
        return _probe_latent(vqgan, config.batch_size, side, device)

    def decoder(checkpoint: bool):
        decode = in_autocast(lambda z: compute.vqgan.decode(vqgan.quantize(z), checkpoint=checkpoint), device, dtype)
        return decode, fit_decoder_memory(lambda side: probe_decoder(decode, latent(side).requires_grad_(True)),
                                          vqgan.factor)

    checkpoint = config.checkpoint_decoder
    decode, plain = decoder(bool(checkpoint))
    checkpointed = decoder(True)[1] if checkpoint is None else None
    checkpoint_from = CHECKPOINT_FROM_PIXELS if checkpoint is None else float("inf")

    def for_cutn(cutn: int) -> MemoryModel:
        def probe(side: int) -> tuple[int, int]:
            generator = torch.Generator(device).manual_seed(0)
            objective = _objective(config, compute.clip, timeline, generator, cutn=cutn)
            z = latent(side)
            with torch.no_grad():
                image = decode(z)
            return probe_objective(in_autocast(lambda image: sum(objective(image, z, 0).values()), device, dtype),
                                   image)

        return MemoryModel(plain, fit_objective_memory(probe, vqgan.factor), checkpointed, checkpoint_from)

    return for_cutn


def check_output_path(output: str | None) -> None:
    """Refuse an -o that cannot be written before spending the run on it."""
    if not output:
        return
    path = Path(output)
    if path.is_dir():
        raise UserError(f"-o {output} is a folder: give a file name such as {path / 'image.png'}")
    outputs.image_format(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"-o {output}: {parent} is a file, not a folder")
            break


def _prior_text(timeline: PromptTimeline | None) -> str:
    """What init.mode=prior draws: the text prompts with a positive weight at step 0."""
    return ", ".join(spec.text for spec in timeline.entries[0][1] if spec.weight > 0) if timeline else ""


def _title(config: DictConfig) -> str:
    if config.prompts:
        return config.prompts[0]
    if config.schedule:
        return str(next(iter(config.schedule.values())))
    if config.image_prompts:  # an upscale without a prompt, say: named after its picture
        return Path(parse_image_prompt(config.image_prompts[0]).text).stem
    return "untitled"
