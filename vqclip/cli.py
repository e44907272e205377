"""The command line: the one place that reads argv.

`vqclip PROMPT ...` generates (the default subcommand); `vqclip models|presets|info ...` inspect.
Bad input ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys

from .errors import UserError, broken_install

COMMANDS = {}
COMPUTING = set()  # the commands that run torch: each one under the thread policy (vqclip.threads)


def command(name: str, computes: bool = True):
    def register(function):
        COMMANDS[name] = function
        if computes:
            COMPUTING.add(name)
        return function

    return register


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserError (one line, exit 2) like every other bad input."""

    def error(self, message: str):
        raise UserError(f"{message} (see: {self.prog} --help)")


# -- generate ----------------------------------------------------------------------------------
def generate_parser() -> Parser:
    parser = Parser(prog="vqclip", description="Generate an image from text by VQGAN+CLIP optimisation. "
                    "Other commands: " + ", ".join(sorted(COMMANDS)) + ".",
                    epilog="Any config key can be set as key=value, e.g. cutn=16 init.weight=0.5. "
                    "A first run, offline in seconds: vqclip \"a red circle on a blue background\" --preset shapes")
    parser.add_argument("prompts", nargs="*", help='text prompts, "text[:weight[:stop]]"; key=value overrides')
    parser.add_argument("-p", "--preset", default=None, help="a preset name (vqclip presets list) or a YAML file")
    parser.add_argument("-o", "--output", help="also write the final image here")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--init-image", help="start from this image (sets init.mode=image)")
    parser.add_argument("--mask", help="edit part of the start image: a greyscale or alpha mask, white = may change, "
                        "black = keep (mask.* keys: feather, keep_weight, composite, cutouts, fill)")
    parser.add_argument("--mask-box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="the region that may change, as a box: fractions of the image (all ≤ 1) or pixels")
    parser.add_argument("--mask-invert", action="store_true", help="change the black part of the mask instead")
    parser.add_argument("--outpaint", type=int, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                        help="grow the canvas around the init image by these pixels and fill the new border")
    parser.add_argument("--image-prompt", action="append", default=[], help="PATH[:weight], repeatable")
    parser.add_argument("--noise-prompt", action="append", default=[], help="SEED[:weight], repeatable")
    parser.add_argument("--batch", type=int, help="candidates optimised together; the best is final.png")
    parser.add_argument("--run-dir", help="the run folder (default outputs/<date>/<NNNN>-<slug>/)")
    parser.add_argument("--from", dest="from_image", help="run again with the settings stored in a vqclip PNG")
    parser.add_argument("--resume", dest="resume_dir", metavar="RUN_DIR",
                        help="continue a run from its folder's state.pt (same result as never stopping)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the usable cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@command("generate")
def generate_command(argv: list[str]) -> int:
    args = generate_parser().parse_intermixed_args(argv)  # before the heavy imports: --help stays instant

    from .config import overrides_from_flags
    from .generation import generate_from_cli

    prompts = [a for a in args.prompts if not _is_override(a)]
    dotlist = [a for a in args.prompts if _is_override(a)]
    warn_key_like_prompts(prompts)
    overrides = overrides_from_flags({
        "prompts": prompts or None, "steps": args.steps, "size": args.size, "seed": args.seed,
        "output": args.output, "batch": args.batch, "run_dir": args.run_dir, "quiet": args.quiet or None,
        "threads": args.threads, "image_prompt": args.image_prompt or None, "noise_prompt": args.noise_prompt or None,
        "init_image": args.init_image, "mask": args.mask, "mask_box": args.mask_box,
        "mask_invert": args.mask_invert or None, "outpaint": args.outpaint})
    result = generate_from_cli(preset=args.preset, overrides=overrides, dotlist=dotlist,
                               from_image=args.from_image, resume_dir=args.resume_dir)
    print(result.final_path)
    if result.run_dir not in result.final_path.parents:  # -o: say where the rest of the run is
        print(f"vqclip: the run folder (for --resume) is {result.run_dir}", file=sys.stderr)
    return 0


def warn_key_like_prompts(prompts: list[str]) -> None:
    """A bare `cutn` is drawn as the word "cutn": likely a key=value that lost its value."""
    words = [text for text in prompts if _is_override(f"{text}=")]
    if words:
        import logging

        from .config import key_names

        for word in set(words) & key_names():
            logging.getLogger("vqclip.cli").warning("the prompt %r is also a config key: to set it, write %s=VALUE",
                                                    word, word)


def _is_override(arg: str) -> bool:
    """`key=value` (a config override) as opposed to a prompt: the key is a dotted identifier."""
    key, eq, _ = arg.partition("=")
    return bool(eq) and all(part.isidentifier() for part in key.split("."))


@contextlib.contextmanager
def training(command: str, argv: list[str], threads: int | None, quiet: bool):
    """A training command's run: under the thread policy, and on Ctrl-C or SIGTERM (the loop has saved
    its state) the command that continues it."""
    from .distributed import ranks_from_env
    from .interrupt import Interrupted
    from .threads import run_threads, warn_if_cores_are_shared

    try:
        with run_threads(threads, quiet=quiet) as plan:
            if not quiet and not ranks_from_env().several:
                warn_if_cores_are_shared(plan)
            yield
    except Interrupted as exc:
        again = shlex.join([*command.split(), *argv, *([] if "--resume" in argv else ["--resume"])])
        ranks = ranks_from_env()
        launcher = f"torchrun --nproc-per-node {ranks.world} -m vqclip" if ranks.several else "vqclip"
        raise Interrupted(f"{exc}; continue with: {launcher} {again}") from None


def threads_setting(settings: list[str], flag: int | None) -> int | None:
    """--threads N, or `threads=N` among a training command's key=value settings (taken out of them)."""
    for item in [item for item in settings if item.startswith("threads=")]:
        settings.remove(item)
        value = item.partition("=")[2]
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"threads={value} must be a whole number of at least 1")
        flag = int(value) if flag is None else flag
    if flag is not None and flag < 1:
        raise UserError(f"--threads must be at least 1, not {flag}")
    return flag


# -- models ------------------------------------------------------------------------------------
@command("models")
def models_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip models", description="Model files: list, download, check.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the models vqclip knows by name")
    download = sub.add_parser("download", help="fetch a model into the cache ($VQCLIP_CACHE)")
    download.add_argument("name")
    check = sub.add_parser("check", help="load the models a config names and report their shapes")
    check.add_argument("-p", "--preset", default=None)
    check.add_argument("overrides", nargs="*", help="key=value, e.g. vqgan.config=model.yaml")
    args = parser.parse_args(argv)

    from .models import registry

    if args.action == "list":
        print("VQGANs (vqgan.name=...):")
        for entry in registry.VQGANS.values():
            size = f"{entry.checkpoint.approx_mb:.0f} MB" if entry.checkpoint.approx_mb else ""
            print(f"  {entry.name:22s} {size:>8s}  {entry.note}")
        print("Priors (init.prior=...):")
        for name in registry.PRIORS:
            print(f"  {name}")
        print("CLIP weights (clip.models=[{name: ARCH, pretrained: TAG}]; download as ARCH:TAG):")
        for arch, tags in registry.CLIP_PRETRAINED.items():
            print(f"  {arch:22s} {', '.join(tags)}")
        return 0
    if args.action == "download":
        for path in registry.download_by_name(args.name):
            print(path)
        return 0
    return _check_models(args.preset, args.overrides)


def _check_models(preset: str | None, overrides: list[str]) -> int:
    import torch

    from .config import build_config
    from .loading import load_models
    from .threads import run_threads

    config = build_config(preset or "default", dotlist=overrides)
    with run_threads(config.threads, quiet=True):
        models = load_models(config, torch.device("cpu"))
        vqgan = models.vqgan
        tokens = torch.zeros(1, 2, 2, dtype=torch.long)
        image = vqgan.decode(vqgan.quantize(vqgan.tokens_to_z(tokens)))
    print(f"VQGAN: {vqgan.kind}, {vqgan.n_embed} codes × {vqgan.embed_dim}, factor {vqgan.factor}, "
          f"decodes 2×2 tokens to {tuple(image.shape[-2:])}")
    for member in models.clip.members:
        print(f"CLIP: {member.name} input {member.input_size} px, embedding {member.embed_dim}, weight {member.weight}")
    return 0


# -- the shapes world ---------------------------------------------------------------------------
@command("shapes")
def shapes_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip shapes", description="The embedded shapes world: train its models.")
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="run a training recipe")
    train.add_argument("model", choices=["vqgan", "clip", "prior"])
    train.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    train.add_argument("--out", required=True, help="folder for the weights, metrics and training state")
    train.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    train.add_argument("--seed", type=int)
    train.add_argument("--vqgan", help="clip, prior: a folder with vqgan.yaml + vqgan.safetensors whose "
                       "reconstructions the CLIP also learns from, or whose tokens the prior writes "
                       "(default: the shipped shapes VQGAN)")
    train.add_argument("--threads", type=int, help="CPU threads for torch (default: the usable cores)")
    train.add_argument("--quiet", action="store_true")
    grade = sub.add_parser("eval", help="generate prompts and grade the images by their pixels")
    grade.add_argument("--prompts", help="a text file, one prompt per line (default: 8 colours × 3 shapes)")
    grade.add_argument("--seeds", type=int, default=1, help="seeds per prompt")
    grade.add_argument("-p", "--preset", default="shapes")
    grade.add_argument("--out", default="outputs/shapes-eval", help="folder for the images and eval.json")
    grade.add_argument("--init", choices=["random", "prior"], help="where each run starts (random: random codes "
                       "with no pull toward them, init.weight=0; prior: the shipped shapes prior unless "
                       "init.prior=... says otherwise)")
    grade.add_argument("overrides", nargs="*", help="key=value, e.g. steps=50 init.mode=random")
    args = parser.parse_args(argv)
    if args.action == "eval":
        return _shapes_eval(args)
    if args.steps is not None and args.steps <= 0:
        raise UserError(f"--steps must be at least 1, not {args.steps}")

    from pathlib import Path

    from .distributed import ranks_from_env

    if ranks_from_env().several:  # its evaluations and files assume one process
        raise UserError("vqclip shapes train runs in one process: start it without torchrun (several "
                        "processes: vqclip train vqgan|clip|prior on a folder)")
    from .shapes import train_clip, train_prior, train_vqgan

    module = {"vqgan": train_vqgan, "clip": train_clip, "prior": train_prior}[args.model]
    recipe = {"vqgan": train_vqgan.VQGANRecipe, "clip": train_clip.ClipRecipe,
              "prior": train_prior.PriorRecipe}[args.model]()
    recipe.steps = args.steps if args.steps is not None else recipe.steps
    recipe.seed = args.seed if args.seed is not None else recipe.seed
    extra = {}
    if args.model in ("clip", "prior"):
        extra["vqgan"] = _shapes_vqgan(args.vqgan)
    if args.model == "prior":  # the shipped CLIP ranks the prior's samples when it is graded
        from .models.clip import load_clip_ensemble
        from .models.registry import resolve_clip

        extra["clip"] = load_clip_ensemble([resolve_clip({"name": "shapes", "weight": 1.0})])
    with training("shapes", argv, threads_setting([], args.threads), args.quiet):
        metrics = module.train(Path(args.out), recipe, resume=args.resume, progress=not args.quiet, **extra)
    print(json.dumps(metrics))
    return 0


def _shapes_eval(args) -> int:
    from pathlib import Path

    from .outputs import write_json
    from .shapes import evaluate

    if args.seeds <= 0:
        raise UserError(f"--seeds must be at least 1, not {args.seeds}")
    prompts = evaluate.read_prompts(args.prompts) if args.prompts else evaluate.default_prompts()
    out = Path(args.out)
    # random: plain CLIP guidance from random codes, without the preset's pull toward the (prior's) start
    starts = {"prior": ["init.mode=prior", "init.prior=shapes"], "random": ["init.mode=random", "init.weight=0"]}
    init = starts[args.init] if args.init else []
    report = evaluate.evaluate(prompts, args.seeds, preset=args.preset, out=out, dotlist=init + args.overrides)
    print(evaluate.format_table(report))
    write_json(out / "eval.json", report)
    print(out / "eval.json")
    return 0


def _shapes_vqgan(folder: str | None):
    from pathlib import Path

    from .models.registry import load_vqgan_from_config
    from .models.vqgan import load_vqgan

    if folder is None:
        return load_vqgan_from_config({"name": "shapes"}, progress=False)
    return load_vqgan(Path(folder) / "vqgan.yaml", Path(folder) / "vqgan.safetensors")


# -- the shipped digits world -------------------------------------------------------------------
@command("digits")
def digits_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip digits", description="The shipped digits models: grade what they draw.")
    sub = parser.add_subparsers(dest="action", required=True)
    grade = sub.add_parser("eval", help='draw "the digit 0" ... "the digit 9" and judge the images with a '
                           "classifier of real held-out digits (needs: pip install 'vqclip[digits]')")
    grade.add_argument("--seeds", type=int, default=1, help="seeds per digit")
    grade.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="which digits to draw, e.g. 3,7 (default: all)")
    grade.add_argument("--prior-samples", type=int, default=0, help="also judge this many samples of the prior "
                       "alone per digit, and the best of them by CLIP (default: none)")
    grade.add_argument("-p", "--preset", default="digits")
    grade.add_argument("--out", default="outputs/digits-eval", help="folder for the images and eval.json")
    grade.add_argument("overrides", nargs="*", help="key=value, e.g. steps=20 init.weight=10")
    args = parser.parse_args(argv)
    digits = tuple(int(d) for d in args.digits.split(",") if d.strip().isdigit() and int(d) <= 9)
    if not digits or len(digits) != len(args.digits.split(",")):
        raise UserError(f"--digits takes digits 0 to 9 separated by commas (e.g. 3,7), not {args.digits!r}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, not {args.seeds}")
    if args.prior_samples < 0:
        raise UserError(f"--prior-samples must be at least 0, not {args.prior_samples}")

    from pathlib import Path

    from .digits import evaluate
    from .outputs import write_json

    out = Path(args.out)
    report = evaluate.evaluate(args.seeds, preset=args.preset, out=out, dotlist=args.overrides,
                               prior_samples=args.prior_samples, digits=digits)
    print(evaluate.format_table(report))
    write_json(out / "eval.json", report)
    print(out / "eval.json")
    return 0


# -- data sets and the general training recipes -----------------------------------------------
@command("data", computes=False)
def data_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip data", description="Write a ready-made captioned data set to train on.")
    sub = parser.add_subparsers(dest="name", required=True)
    digits = sub.add_parser("digits", help="scikit-learn's 1,797 handwritten digits as OUT/train and OUT/held-out "
                            "(needs: pip install 'vqclip[digits]')")
    digits.add_argument("out")
    digits.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    args = parser.parse_args(argv)

    from .digits import data as digits_data

    counts = digits_data.write_digits(args.out, args.size)
    print(f"{args.out}: {counts['train']} training and {counts['held-out']} held-out images")
    return 0


@command("train")
def train_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip train", description="Train a VQGAN, a CLIP, a prior, or all three and a preset, "
                    "on a folder of captioned images (see docs/training.md).",
                    epilog="Settings as key=value, e.g. n_embed=1024 (train all: vqgan.n_embed=1024 clip.steps=500).")
    parser.add_argument("recipe", choices=["vqgan", "clip", "prior", "all"])
    parser.add_argument("data", help="images with same-name .txt captions, a .csv/.jsonl list, or class sub-folders")
    parser.add_argument("--out", required=True, help="folder for the weights, metrics, samples and training state")
    parser.add_argument("--held-out", help="captioned images for the figures (default: some kept out of DATA)")
    parser.add_argument("--template", help="class sub-folders: the caption, with {} for the folder's name")
    parser.add_argument("--steps", type=int, help="training steps (train all: of each recipe)")
    parser.add_argument("--size", type=int, help="the training images' side in pixels")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--from", dest="base", help="vqgan: a VQGAN to fine-tune (a name, a folder or a taming "
                        "YAML); clip: an open_clip checkpoint file")
    parser.add_argument("--vqgan", help="prior: the VQGAN whose tokens it writes (a folder from train vqgan, or a name)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's training state")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (bf16 autocast where it is fast)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the usable cores; also threads=N)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("settings", nargs="*", help="key=value")
    args = parser.parse_intermixed_args(argv)
    threads = threads_setting(args.settings, args.threads)
    for name in ("steps", "size"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UserError(f"--{name} must be at least 1, not {getattr(args, name)}")
    if args.vqgan and args.recipe != "prior" or args.base and args.recipe == "prior":
        raise UserError(f"train {args.recipe} takes " + ("--vqgan (the VQGAN whose tokens it writes), not --from"
                        if args.recipe == "prior" else "--from, not --vqgan (that is for train prior)"))

    from .device import pick_device
    from .distributed import ranks_from_env
    from .train import jobs

    flags = {"steps": args.steps, "seed": args.seed, "base": args.base}
    if args.recipe != "prior":
        flags["size"] = args.size
    config = jobs.build_config(args.recipe, args.out, args.settings, resume=args.resume, **flags)
    options = dict(held_out=args.held_out, template=args.template, resume=args.resume,
                   device=str(pick_device(args.device)), progress=not args.quiet)
    if args.recipe == "prior":
        options.update(vqgan=args.vqgan, size=args.size)
    with training("train", argv, threads, args.quiet):
        metrics = jobs.run(args.recipe, args.data, args.out, config, **options)
    if ranks_from_env().main:  # under torchrun, one summary
        print(json.dumps(summary(metrics)))
    return 0


def summary(metrics: dict) -> dict:
    """The figures of a metrics dict, without its history and settings (those are in the JSON files)."""
    if all(isinstance(v, dict) for v in metrics.values()):
        return {name: summary(value) for name, value in metrics.items()}
    return {k: v for k, v in metrics.items() if k not in ("history", "config", "train", "skipped_examples")}


# -- presets and info --------------------------------------------------------------------------
@command("presets", computes=False)
def presets_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip presets", description="Named run presets.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    show = sub.add_parser("show", help="print a preset merged with the defaults")
    show.add_argument("name")
    args = parser.parse_args(argv)

    from .config import build_config, preset_names, preset_path, read_yaml, to_yaml

    if args.action == "list":
        for name in preset_names():
            first = read_yaml(preset_path(name)).get("description", "")
            print(f"  {name:16s} {first}")
        return 0
    print(to_yaml(build_config(args.name)), end="")
    return 0


@command("info", computes=False)
def info_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip info", description="Print the settings stored in a vqclip PNG.")
    parser.add_argument("image")
    args = parser.parse_args(argv)
    from .outputs import read_metadata

    print(json.dumps(read_metadata(args.image), indent=2, ensure_ascii=False))
    return 0


# -- the web UI --------------------------------------------------------------------------------
@command("ui")
def ui_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip ui", description="A web page to generate with a live preview "
                    "(needs the extra: pip install 'vqclip[ui]'). Ctrl-C stops it.",
                    epilog="Whoever opens the page runs jobs here, so the page takes file paths (init.image=, "
                    "vqgan.checkpoint=, ...) only from the outputs folder or its own uploads, and the server alone "
                    "chooses where runs are written (run_dir, outputs_root, output). Listening beyond this machine "
                    "needs a login (--auth, --auth-file) or --no-auth on purpose; the login crosses the network "
                    "unencrypted (plain HTTP): on an untrusted network put HTTPS or an SSH tunnel in front. "
                    "Example: vqclip ui --host 0.0.0.0 --auth-file ui-users.txt")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; any other address, "
                        "such as 0.0.0.0, needs --auth, --auth-file or --no-auth)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("-p", "--preset", default="shapes", help="the preset the form starts with")
    parser.add_argument("--outputs", default="outputs", help="where runs are written and the gallery reads them")
    parser.add_argument("--preview-every", type=int, default=5, help="steps between preview images")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                        help="ask for this login (repeat for more users); other users of this machine can see it "
                        "in the process list: prefer --auth-file")
    parser.add_argument("--auth-file", metavar="FILE", help="ask for a login from this file of USER:PASS lines "
                        "(blank lines and # comments skipped)")
    parser.add_argument("--no-auth", action="store_true",
                        help="listen beyond this machine without a login: anyone who can reach the address can "
                        "run jobs here")
    args = parser.parse_args(argv)
    if args.preview_every <= 0:
        raise UserError(f"--preview-every must be at least 1, not {args.preview_every}")

    from .ui.access import check_listening, is_loopback, read_logins
    from .ui.app import serve

    logins = read_logins(args.auth, args.auth_file)
    check_listening(args.host, logins, args.no_auth)  # before Gradio loads: a refusal is instant
    if args.no_auth and not is_loopback(args.host):
        print(f"vqclip ui: listening on {args.host} without a login (--no-auth): anyone who can reach this address "
              "can run jobs here", file=sys.stderr)
    serve(args.host, args.port, auth=logins, no_auth=args.no_auth, preset=args.preset, outputs_root=args.outputs,
          preview_every=args.preview_every)
    return 0


# -- batches -------------------------------------------------------------------------------------
@command("batch")
def batch_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip batch", description="Run the jobs of a batch file (defaults, a grid, a list); "
                    "OUT gets a folder per job, summary.jsonl and contact_sheet.png.")
    parser.add_argument("file", help="the batch YAML file")
    parser.add_argument("--out", required=True, help="the batch's output folder")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (one GPU each if several)")
    parser.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                        help="run the jobs as Ray tasks: a new local Ray, or the cluster at ADDRESS "
                        "(HOST:PORT, ray://HOST:PORT, auto)")
    parser.add_argument("--resume", action="store_true", help="continue the batch in OUT: skip the jobs finished "
                        "with the same settings")
    parser.add_argument("--overwrite", action="store_true", help="first remove the batch already in OUT (its "
                        "summary.jsonl, contact_sheet.png and job folders; other files stay)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per job (same seed + threads = same image)")
    args = parser.parse_args(argv)

    from pathlib import Path

    from .batch import read_batch_file, run
    from .interrupt import Interrupted

    jobs = read_batch_file(args.file)
    failed = done = 0
    results = run(jobs, args.out, workers=args.workers, ray=args.ray, resume=args.resume, overwrite=args.overwrite,
                  threads=args.threads)
    try:
        for done, result in enumerate(results, 1):
            where = f"[{done}/{len(jobs)}] {result.job.name}"
            if result.ok:
                score = "" if result.score is None else f" score {result.score:.3f}"
                note = "finished earlier" if result.skipped else f"{result.seconds:.1f} s"
                print(f"{where}: ok{score} ({note}) {result.files[0] if result.files else ''}", flush=True)
            else:
                failed += 1
                print(f"{where}: failed: {result.error}", flush=True)
    except KeyboardInterrupt:  # the finished jobs are in summary.jsonl; --resume runs the others
        raise Interrupted(f"batch stopped after {done} of {len(jobs)} jobs; continue with: vqclip batch "
                          f"{args.file} --out {args.out} --resume") from None

    print(Path(args.out) / "summary.jsonl")
    print(Path(args.out) / "contact_sheet.png")
    if failed:
        print(f"vqclip: {failed} of {len(jobs)} jobs failed (see {Path(args.out) / 'summary.jsonl'})", file=sys.stderr)
    return 1 if failed else 0


# -- video -------------------------------------------------------------------------------------
VIDEO_ACTIONS = ("animate", "interpolate", "restyle")


def video_parser(action: str) -> Parser:
    usage = {"animate": "PROMPT... [--frames N] [--fps F] [-o OUT]",
             "interpolate": "KEY KEY... [--between N] [-o OUT]  |  VIDEO_OR_FOLDER --between N",
             "restyle": "INPUT PROMPT... [-o OUT]"}[action]
    parser = Parser(prog=f"vqclip video {action}", usage=f"%(prog)s {usage} [key=value ...]",
                    description="Make a video (mp4, gif, or a folder of PNG frames when OUT has no extension). "
                    "A killed run continues with: vqclip video --resume RUN_DIR",
                    epilog="Any config key can be set as key=value, e.g. video.zoom='0: 1.0, 30: 1.05'.")
    parser.add_argument("items", nargs="*", help="prompts / keys / input, and key=value overrides")
    parser.add_argument("-p", "--preset", help="a preset name or YAML file (default: zoom, morph or restyle)")
    parser.add_argument("-o", "--output", help="the video: .mp4, .gif or a folder (default RUN_DIR/video.mp4)")
    parser.add_argument("--fps", type=float, help="frames per second of the written video")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps-per-frame", type=int)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the usable cores)")
    parser.add_argument("--run-dir", help="the run folder (default outputs/<date>/<NNNN>-<slug>/)")
    parser.add_argument("--resume", dest="resume_dir", metavar="RUN_DIR", help="continue a killed video run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if action == "animate":
        parser.add_argument("--frames", type=int, help="frames to make")
    if action == "restyle":
        parser.add_argument("--mask", help="restyle only this region: a mask picture (white = may change) for every "
                            "frame, or a mask video of the same length")
        parser.add_argument("--mask-box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                            help="the region to restyle, as a box: fractions of the frame (all ≤ 1) or pixels")
        parser.add_argument("--mask-invert", action="store_true", help="restyle the black part of the mask instead")
    if action == "interpolate":
        parser.add_argument("--between", type=int, help="frames made between each pair of keys")
        parser.add_argument("--method", help="lerp | slerp")
        parser.add_argument("--ease", help="linear | cosine | ease-in-out")
        parser.add_argument("--guided", type=int, metavar="STEPS", help="CLIP steps per in-between frame")
    return parser


@command("video")
def video_command(argv: list[str]) -> int:
    from . import video  # its functions import torch on first use: --help stays instant
    from .config import overrides_from_flags

    if argv[:1] == ["--resume"] or (argv and argv[0].startswith("--resume=")):
        resume = Parser(prog="vqclip video", usage="%(prog)s --resume RUN_DIR [--quiet]")
        resume.add_argument("--resume", dest="resume_dir", metavar="RUN_DIR", required=True)
        resume.add_argument("--quiet", action="store_true")
        args = resume.parse_args(argv)
        print(video.resume(args.resume_dir, overrides={"quiet": True} if args.quiet else None).output)
        return 0
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: vqclip video {animate,interpolate,restyle} ... | vqclip video --resume RUN_DIR\n"
              "  animate PROMPT... --frames N --fps F -o OUT    frames that move (zoom, rotate, translate)\n"
              "  interpolate KEY KEY... --between N -o OUT      in-betweens in latent space (or: ONE_VIDEO)\n"
              "  restyle INPUT PROMPT... -o OUT                 an input video, frame by frame, restyled\n"
              "see: vqclip video animate --help")
        return 0
    if not argv or argv[0] not in VIDEO_ACTIONS:
        raise UserError(f"vqclip video needs one of {', '.join(VIDEO_ACTIONS)} (or --resume RUN_DIR), "
                        f"got {argv[0] if argv else 'nothing'!r} (see: vqclip video animate --help)")
    action = argv[0]
    args = video_parser(action).parse_intermixed_args(argv[1:])
    if args.resume_dir:
        print(video.resume(args.resume_dir, overrides={"quiet": True} if args.quiet else None).output)
        return 0
    items = [a for a in args.items if not _is_override(a)]
    dotlist = [a for a in args.items if _is_override(a)]  # video.zoom=0: 1.0, 30: 1.05 works unquoted
    flags = ("fps", "steps_per_frame", "frames", "between", "method", "ease", "guided", "size", "seed", "output",
             "run_dir", "threads", "mask", "mask_box")
    overrides = overrides_from_flags({**{name: getattr(args, name, None) for name in flags},
                                      "quiet": args.quiet or None, "mask_invert": getattr(args, "mask_invert", None) or None})
    if action == "animate":
        result = video.animate(items or None, preset=args.preset, dotlist=dotlist, **overrides)
    elif action == "interpolate":
        result = video.interpolate(items, preset=args.preset, dotlist=dotlist, **overrides)
    else:
        if not items:
            raise UserError("restyle needs an input video or frame folder, then prompts (see: vqclip video restyle --help)")
        result = video.restyle(items[0], items[1:] or None, preset=args.preset, dotlist=dotlist, **overrides)
    print(result.output)
    return 0


# -- the BART prior ----------------------------------------------------------------------------
@command("prior")
def prior_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip prior", description="The BART prior (DALL-E mini): build data, train, sample.")
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build-data", help="captioned images -> VQGAN token grids + text tokens, one file")
    build.add_argument("source", help="a folder of images with same-name .txt captions or of class sub-folders, "
                       "or a .csv/.jsonl list")
    build.add_argument("--template", help="class sub-folders: the caption, with {} for the folder's name")
    build.add_argument("-o", "--out", required=True, help="the data file to write (e.g. data.pt)")
    build.add_argument("--size", type=int, help="images are resized to SIZE×SIZE (default: the config's width)")
    build.add_argument("--batch", type=int, default=32)
    build.add_argument("--resume", action="store_true", help="continue an interrupted build of OUT")
    train = sub.add_parser("train", help="train a prior on a data file (settings as key=value, e.g. steps=2000)")
    train.add_argument("data")
    train.add_argument("--out", required=True, help="folder for prior.json, prior.safetensors and the training state")
    train.add_argument("--held-out", help="a data file for the held-out loss (default: the last eval_items of DATA)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    train.add_argument("--device", default="cpu")
    sample = sub.add_parser("sample", help="draw images for a prompt, ranked by CLIP")
    sample.add_argument("prompt")
    sample.add_argument("-o", "--out", required=True, help="the best image; with --num N also OUT-0..N-1")
    sample.add_argument("--num", type=int, help="samples to draw and rank (default: the prior's recommendation, "
                        "else 8)")
    sample.add_argument("--prior", help="a prior name (vqclip models list) or folder (default: the preset's init.prior)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--temperature", type=float, help="default: the prior's recommendation, else 1")
    sample.add_argument("--top-k", type=int, help="default: the prior's recommendation, else 256")
    sample.add_argument("--top-p", type=float, help="default: the prior's recommendation, else 1")
    sample.add_argument("--supercondition", type=float, help="s in uncond·(1−s) + cond·s (default: the "
                        "prior's recommendation, else 4)")
    for action in (build, train, sample):
        action.add_argument("--threads", type=int, help="CPU threads for torch (default: the usable cores)")
        action.add_argument("--quiet", action="store_true")
    for action in (build, sample):
        action.add_argument("-p", "--preset", default="default", help="where the VQGAN and CLIP come from")
    for action in (build, train, sample):
        action.add_argument("settings", nargs="*", help="key=value: config keys (build-data, sample) or "
                            "training settings (train)")
    args, rest = parser.parse_known_args(argv)  # key=value may also follow the options
    unknown = [item for item in rest if item.startswith("-") or "=" not in item]
    if unknown:
        raise UserError(f"unrecognized arguments: {' '.join(unknown)} (see: vqclip prior {args.action} --help)")
    args.settings += rest

    from .prior import jobs

    if args.action == "train":
        with training("prior", argv, threads_setting(args.settings, args.threads), args.quiet):
            metrics = jobs.train_job(args.data, args.out, args.settings, held_out=args.held_out, resume=args.resume,
                                     device=args.device, progress=not args.quiet)
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}))
        return 0
    from .config import build_config, overrides_from_flags
    from .threads import run_threads

    config = build_config(args.preset, overrides_from_flags({"quiet": args.quiet or None, "threads": args.threads}),
                          args.settings)
    with run_threads(config.threads, quiet=config.quiet):
        return _prior_data_or_samples(args, config, jobs)


def _prior_data_or_samples(args, config, jobs) -> int:
    if args.action == "build-data":
        size = args.size or int(config.size[0])
        if size <= 0 or args.batch <= 0:
            raise UserError("--size and --batch must be at least 1")
        data = jobs.build_data_job(args.source, args.out, config, size=size, batch_size=args.batch,
                                   resume=args.resume, progress=not args.quiet, template=args.template)
        print(f"{args.out}: {len(data.captions)} images, token grid {tuple(data.image_tokens.shape[1:])}")
        return 0
    options = dict(count=args.num, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   supercondition=args.supercondition, seed=args.seed)
    for path in jobs.sample_job(args.prompt, args.out, config, options, args.prior):
        print(path)
    return 0


# -- bench -------------------------------------------------------------------------------------
@command("bench")
def bench_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip bench", description="Time the optimisation step on random weights of the "
                    "real architectures, stage by stage, against the classic scripts' fp32 step; or, with "
                    "--concurrent K, time K whole runs started at once.")
    parser.add_argument("--vqgan", default="imagenet_f16_16384", help="a VQGAN name (vqclip models list)")
    parser.add_argument("--clip", default="ViT-B-32", help="an open_clip architecture, or shapes")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--steps", type=int, help="timed steps per path, after one warm-up step (default 3); "
                        "with --concurrent, steps per run (default 30); with --time-to-image, the classic loop's "
                        "steps (default 500)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto", help="the fast path's precision: auto | fp32 | bf16 | fp16")
    parser.add_argument("--augmentations", default="classic", help="an augmentation pipeline name or YAML file")
    parser.add_argument("--compile", default="none", help="torch.compile the fast path's decoder and CLIP: none | default | "
                        "reduce-overhead (CUDA graphs); the warm-up step pays for it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--concurrent", type=int, metavar="K", help="start K whole runs at once and compare the "
                        "time until all end with perfect sharing of the cores")
    parser.add_argument("--workload", default="shapes", help="--concurrent: shapes (the README's first command) "
                        "or real (imagenet_f16_16384 + ViT-B/32 at 128 px, random weights)")
    parser.add_argument("--threads", type=int, help="--concurrent: fix each run's threads (default: the usable cores)")
    parser.add_argument("--time-to-image", type=int, metavar="N", help="instead: seconds until N prompts of the "
                        "shapes world reach the classic loop's score, from random codes and from the preset's start")
    parser.add_argument("-p", "--preset", default="shapes", help="--time-to-image: the preset (default shapes)")
    args = parser.parse_args(argv)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.time_to_image is not None:
        from .bench.time_to_image import format_time_to_image, time_to_image
        from .shapes.evaluate import default_prompts

        every = default_prompts()  # 8 colours × 3 shapes: take each colour once, the shapes in turn
        prompts = [every[3 * colour + colour % 3] for colour in range(8)][:args.time_to_image]
        report = time_to_image(prompts, preset=args.preset, steps=args.steps or 500, progress=progress)
        print(json.dumps(report) if args.json else format_time_to_image(report))
        return 0
    if args.concurrent is not None:
        from .bench.concurrent import concurrent, format_concurrent

        result = concurrent(args.concurrent, args.workload, steps=args.steps or 30, threads=args.threads,
                            progress=progress)
        print(json.dumps(result) if args.json else format_concurrent(result))
        return 0

    from .bench.step import bench, format_report
    from .threads import run_threads

    with run_threads():
        result = bench(vqgan=args.vqgan, clip=args.clip, size=args.size, cutn=args.cutn, steps=args.steps or 3,
                       device=args.device, precision=args.precision, augmentations=args.augmentations,
                       compile=args.compile, progress=progress)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


# -- entry point -------------------------------------------------------------------------------
def show_warnings() -> None:
    """The library's warnings (vqclip.* loggers) as one 'vqclip: warning: ...' line each on stderr."""
    import logging

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # sys.stderr as it is now, not when made
            print(f"vqclip: {record.levelname.lower()}: {' '.join(record.getMessage().split())}", file=sys.stderr)

    logger = logging.getLogger("vqclip")
    if not any(type(handler).__name__ == "OneLine" for handler in logger.handlers):
        logger.addHandler(OneLine(logging.WARNING))
        logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    show_warnings()
    if not argv:  # a bare `vqclip` would start the default preset's download: show how to use it instead
        generate_parser().print_help()
        return 0
    if argv == ["--version"]:
        print(version_line())
        return 0
    name = argv[0] if argv[0] in COMMANDS else "generate"
    said = argv[0] == name  # `vqclip generate trian` draws "trian" as asked
    argv = argv[1:] if said else argv
    try:
        if not said:
            refuse_mistyped_command(argv)
        if name in COMPUTING:
            from .threads import share_cores

            share_cores()  # how torch's idle threads wait, set before torch is imported
        return COMMANDS[name](argv)
    except UserError as exc:
        print(f"vqclip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Interrupted says where the state is and how to continue
        print(f"vqclip: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except (ImportError, RuntimeError, OSError) as exc:
        broken = broken_install(exc)
        if broken is None:
            raise
        print(f"vqclip: error: {broken}", file=sys.stderr)
        return 2


def refuse_mistyped_command(argv: list[str]) -> None:
    """`vqclip presest list` is a typo, not a prompt for the default preset (and its 1.3 GB download)."""
    word = argv[0] if argv else ""
    if not word.isalpha() or not word.islower():
        return
    import difflib

    close = difflib.get_close_matches(word, [name for name in COMMANDS if name != "generate"], n=1, cutoff=0.8)
    if close:
        import shlex

        raise UserError(f"{word!r} is not a command: did you mean `vqclip {shlex.join([close[0], *argv[1:]])}`? "
                        f"(to draw it as a prompt: vqclip generate {shlex.join(argv)})")


def version_line() -> str:
    """`vqclip --version`: its version and those of what decides its results (read, not imported)."""
    from .outputs import environment_info

    info = environment_info()
    return f"vqclip {info.pop('vqclip')} (" + ", ".join(f"{name} {value}" for name, value in info.items()) + ")"
