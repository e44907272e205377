"""The main job: a text prompt (and a config) in, an image and its run folder out.

`generate()` is the Python API; `run()` does the work on a resolved config with optional
pre-loaded models (scripts that make many images load the models once). The pieces, in order:
resolve the config, load the models, build the objective, choose the initial latent, optimise
with a callback that writes progress, logs and state, then rank the candidates and write them.
"""

from __future__ import annotations

import copy
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from . import outputs
from .config import build_config, read_yaml, to_dict
from .errors import UserError
from .init import check_size, initial_z
from .interrupt import Interrupted, stop_on_signals
from .objective import Objective
from .optimize import NumericalError, Step, make_optimizer, make_scheduler, optimize
from .precision import compute_copy, in_autocast, resolve_precision
from .run_files import GenerationResult, RunWriter, restore_rng, seed_everything
from .threads import run_threads
from .prompts import PromptTimeline, parse_prompts, timeline_from_schedule, timeline_from_story


@dataclass
class Models:
    """The loaded networks a run needs; reuse them across runs that share them."""

    vqgan: torch.nn.Module
    clip: object  # vqclip.models.clip.ClipEnsemble
    device: torch.device
    prior: object = None  # vqclip.prior.weights.LoadedPrior, loaded only for init.mode=prior
    copies: dict = field(default_factory=dict, repr=False, compare=False)  # dtype -> these models in it

    def in_precision(self, dtype: torch.dtype) -> Models:
        """These networks computing in `dtype`: a copy made once and kept (fp32 is `self`)."""
        if dtype == torch.float32:
            return self
        if dtype not in self.copies:
            constants = tuple(f"members.{i}.{name}" for i in range(len(self.clip.members)) for name in ("mean", "std"))
            self.copies[dtype] = Models(compute_copy(self.vqgan, dtype, keep_fp32=("quantizer",)),
                                        compute_copy(self.clip, dtype, keep_fp32=constants), self.device)
        return self.copies[dtype]


def pick_device(name: str) -> torch.device:
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise UserError(f"device {name} is not available here ({torch.cuda.device_count()} CUDA devices): "
                            "use device=auto or device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device mps is not available here: use device=auto or device=cpu")
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_models(config: DictConfig, device: torch.device | None = None) -> Models:
    from .models.clip import load_clip_ensemble
    from .models.registry import load_vqgan_from_config, resolve_clip

    device = device or pick_device(config.device)
    plain = to_dict(config)
    vqgan = load_vqgan_from_config(plain["vqgan"], device, progress=not config.quiet)
    clip = load_clip_ensemble([resolve_clip(spec) for spec in plain["clip"]["models"]], device)
    prior = None
    if config.init.mode == "prior":
        from .prior.weights import load_prior

        if not config.init.prior:
            raise UserError("init.mode=prior needs init.prior: a prior name (vqclip models list) or a folder")
        prior = load_prior(config.init.prior, device, progress=not config.quiet)
    return Models(vqgan, clip, device, prior=prior)


def models_key(config: DictConfig) -> str:
    """What `load_models` reads from a config: runs whose keys agree can share loaded models."""
    plain = to_dict(config)
    prior = plain["init"]["prior"] if plain["init"]["mode"] == "prior" else None
    return json.dumps({"vqgan": plain["vqgan"], "clip": plain["clip"], "device": plain["device"], "prior": prior},
                      sort_keys=True)


def build_timeline(config: DictConfig) -> PromptTimeline | None:
    if config.schedule:
        return timeline_from_schedule(dict(config.schedule))
    texts = [text for text in config.prompts if text.strip()]
    if not texts:
        return None
    # Prompts with "^" tell a story; the others hold for the whole run, beside each phrase.
    constant = tuple(spec for text in texts if "^" not in text for spec in parse_prompts(text))
    story = [text for text in texts if "^" in text]
    if not story:
        return PromptTimeline([(0, constant)])
    timeline = timeline_from_story(story, config.story_every)
    return PromptTimeline([(start, specs + constant) for start, specs in timeline.entries])


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
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a vqclip run folder (no config.yaml): give the folder of a run")
    stored = read_yaml(run_dir / "config.yaml")
    stored["run_dir"] = str(run_dir)
    config = build_config(None, {**stored, **(overrides or {})}, dotlist)
    state = outputs.load_state_or_previous(run_dir / "state.pt")
    return run(config, models=models, callback=callback, state=state)


def run(config: DictConfig, models: Models | None = None, callback=None,
        state: dict | None = None) -> GenerationResult:
    """Generate with a resolved config (from `state`, when resuming). Writes the run folder.

    The caller's config is left as given; the one the run resolved (seed, size, threads) is in
    the result and the run folder.
    """
    config = copy.deepcopy(config)
    with run_threads(config.threads) as plan:
        config.threads = plan.threads  # recorded: CPU results depend on it, --from and --resume repeat it
        return _run(config, models, callback, state)


def _run(config: DictConfig, models: Models | None, callback, state: dict | None) -> GenerationResult:
    if config.seed is None:
        config.seed = secrets.randbelow(2**31)  # recorded, so the run can be repeated
    timeline = build_timeline(config)
    check_output_path(config.output)
    models = models or load_models(config)
    dtype = resolve_precision(config.precision, models.device)
    compute = models.in_precision(dtype)  # the frozen networks, in the step's precision
    if config.size == "auto":  # measured before the run's random streams are seeded
        config.size, config.cutn = _auto_size(config, models, compute, timeline, dtype)
    size = (int(config.size[0]), int(config.size[1]))
    check_size(size, models.vqgan.factor)
    generator = seed_everything(config.seed)

    if state is None:
        z = initial_z(config.init, models.vqgan, size, config.batch_size, generator, models.device,
                      prior=models.prior, clip=models.clip, text=_prior_text(timeline))
        anchor = None
        if config.init.weight:
            anchor = z.detach().clone() if config.init.anchor == "z0" else torch.zeros_like(z)
    else:
        z, anchor = state["z"].to(models.device), state.get("anchor")
        anchor = anchor.to(models.device) if anchor is not None else None
    objective = _objective(config, compute.clip, timeline, generator, anchor)
    z = z.detach().clone().requires_grad_(True)
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

    run_dir = outputs.prepare_run_dir(config.run_dir) if config.run_dir else \
        outputs.new_run_dir(config.outputs_root, _title(config))
    outputs.write_yaml(run_dir / "config.yaml", to_dict(config))
    writer = RunWriter(run_dir, config, optimizer, scheduler, generator, anchor, start_step)
    vqgan = models.vqgan

    with stop_on_signals() as stop:
        def on_step(info: Step):
            writer.on_step(info)
            if stop:
                writer.save_state(info.z, info.step)
                raise Interrupted(f"stopped by signal {stop.signal} after step {info.step}; "
                                  f"continue with: vqclip --resume {run_dir}")
            return callback(info) if callback is not None else None

        try:
            steps_done = optimize(z, in_autocast(_decoder(vqgan, compute.vqgan, config, size), models.device, dtype),
                                  in_autocast(objective, models.device, dtype),
                                  steps=config.steps, optimizer=optimizer, scheduler=scheduler,
                                  z_min=vqgan.z_min, z_max=vqgan.z_max, start_step=start_step,
                                  callback=on_step, disable=True if config.quiet else None)
        except NumericalError:
            writer.save_last_good()
            raise
        except (torch.OutOfMemoryError, MemoryError):
            raise UserError(f"out of memory on {models.device} at size {size[0]}×{size[1]} with cutn "
                            f"{config.cutn} and batch {config.batch_size}: try a smaller --size, cutn or "
                            "--batch") from None
    return writer.finish(z.detach(), vqgan, objective, steps_done)


def _objective(config: DictConfig, clip, timeline, generator: torch.Generator, anchor=None,
               cutn: int | None = None) -> Objective:
    from .cutouts import build_augmentations

    return Objective(clip, timeline, image_prompts=list(config.image_prompts), noise_prompts=list(config.noise_prompts),
                     cutn=cutn or config.cutn, cut_pow=config.cut_pow, cut_mode=config.cut_mode,
                     noise_fac=config.noise_fac, augment=build_augmentations(config.augmentations),
                     generator=generator, anchor=anchor, anchor_weight=config.init.weight,
                     anchor_decay=config.init.decay, tv_weight=config.tv_weight)


def _decoder(vqgan, compute_vqgan, config: DictConfig, size: tuple[int, int]):
    """z → image for the step: quantised by the fp32 codebook, decoded by the compute copy."""
    checkpoint = config.checkpoint_decoder
    if checkpoint is None:  # auto: where the decoder's activations start to dominate memory
        checkpoint = size[0] * size[1] >= CHECKPOINT_FROM_PIXELS
    decode = lambda latent: compute_vqgan.decode(vqgan.quantize(latent), checkpoint=checkpoint)  # noqa: E731
    # The decoder is a fixed graph: worth compiling on a GPU for long runs (the first step compiles).
    return torch.compile(decode, dynamic=False) if config.compile else decode


CHECKPOINT_FROM_PIXELS = 512 * 512


def _auto_size(config: DictConfig, models: Models, compute: Models, timeline, dtype) -> tuple[list[int], int]:
    """size=auto: the largest square (and cutn) whose measured step fits the memory budget."""
    from .memory import auto_size, free_memory_bytes, measure_peak_bytes
    from .precision import autocast

    budget = config.memory_budget_mb * 2**20 if config.memory_budget_mb else free_memory_bytes(models.device)
    vqgan = models.vqgan

    def measure(side: int, cutn: int) -> int:
        objective = _objective(config, compute.clip, timeline, torch.Generator(models.device).manual_seed(0),
                               cutn=cutn)
        grid = side // vqgan.factor
        z = vqgan.tokens_to_z(torch.zeros(config.batch_size, grid, grid, dtype=torch.long, device=models.device))
        z.requires_grad_(True)
        decode = _decoder(vqgan, compute.vqgan, config, (side, side))

        def step():
            with autocast(models.device, dtype):
                image = decode(z)
                loss = sum(objective(image, z, 0).values())
            loss.backward()

        return measure_peak_bytes(step, models.device)

    side, cutn = auto_size(measure, vqgan.factor, budget, int(config.cutn))
    if not config.quiet:
        print(f"size=auto: {side}×{side} with cutn {cutn} fits {budget / 2**20:.0f} MB", flush=True)
    return [side, side], cutn


def check_output_path(output: str | None) -> None:
    """Refuse an -o that cannot be written before spending the run on it."""
    if not output:
        return
    path = Path(output)
    if path.is_dir():
        raise UserError(f"-o {output} is a folder: give a file name such as {path / 'image.png'}")
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
    return "untitled"
