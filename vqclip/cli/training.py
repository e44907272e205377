"""The commands of the worlds and of training: `vqclip data`, `vqclip train`, `vqclip shapes eval`,
`vqclip digits eval`, `vqclip emoji eval`."""

from __future__ import annotations

import json

from ..errors import UserError
from . import flags
from .parsing import Parser, at_least, command, threads_setting, training


@command("data", computes=False)
def data_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip data", description="Write a ready-made captioned data set to train on.")
    sub = parser.add_subparsers(dest="name", required=True)
    digits = sub.add_parser("digits", help="scikit-learn's 1,797 handwritten digits as OUT/train and OUT/held-out "
                            "(needs: pip install 'vqclip[digits]')")
    shapes = sub.add_parser("shapes", help="drawings of the shapes world as OUT/train and OUT/held-out (the "
                            "recipes can also draw it on the fly: vqclip train all shapes --out DIR)")
    emoji = sub.add_parser("emoji", help="the named emoji of a colour emoji font on eight background colours, "
                           "as OUT/train and OUT/held-out (held-out: (emoji, background) pairs never trained on)")
    for one in (digits, shapes, emoji):
        one.add_argument("out")
    flags.add(digits, size={"default": 32, "help": "image side in pixels (default 32)"})
    flags.add(emoji, size={"default": 64, "help": "image side in pixels (default 64)"})
    shapes.add_argument("--count", type=int, default=4096, help="training images (default 4096)")
    emoji.add_argument("--font", help="a CBDT/COLR colour emoji font (default: Debian's fonts-noto-color-emoji)")
    emoji.add_argument("--per-pair", type=int, default=1, help="training images of each (emoji, background) pair "
                       "(default 1)")
    args = parser.parse_args(argv)

    if args.name == "shapes":
        at_least(args.count, 1, "--count")
        from ..shapes.data import write_shapes

        counts = write_shapes(args.out, args.count)
    elif args.name == "emoji":
        from ..emoji.data import write_emoji

        counts = write_emoji(args.out, font=args.font, per_pair=args.per_pair, size=args.size)
        print(f"{args.out}: {counts['emoji']} emoji")
    else:
        from ..digits.data import write_digits

        counts = write_digits(args.out, args.size)
    print(f"{args.out}: {counts['train']} training and {counts['held-out']} held-out images")
    return 0


@command("train")
def train_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip train", description="Train a VQGAN, a CLIP, a prior, or all three and a preset, "
                    "on a folder of captioned images or on the shapes world (see docs/training.md).",
                    epilog="Settings as key=value, e.g. n_embed=1024 (train all: vqgan.n_embed=1024 clip.steps=500).")
    parser.add_argument("recipe", choices=["vqgan", "clip", "prior", "all"])
    parser.add_argument("data", help="images with same-name .txt captions, a .csv/.jsonl list, class sub-folders, "
                        "or shapes (the shapes world, drawn on the fly; ./shapes for a folder of that name)")
    flags.add(parser, "threads", "settings",
              out={"required": True, "help": "folder for the weights, metrics, samples and training state"},
              steps={"help": "training steps (train all: of each recipe)"},
              size={"help": "the training images' side in pixels"},
              seed={}, resume={"help": "continue from OUT's training state"},
              device={"help": "cpu | cuda | cuda:N (bf16 autocast where it is fast)"},
              quiet={"help": "no progress bars"},
              vqgan={"help": "prior: the VQGAN whose tokens it writes; clip: the one whose reconstructions it "
                             "learns from (recon_fraction); a folder from train vqgan, or a name"},
              **{"from": {"help": "vqgan: a VQGAN to fine-tune (a name, a folder or a taming YAML); "
                                  "clip: an open_clip checkpoint file"}})
    parser.add_argument("--held-out", help="captioned images for the figures (default: some kept out of DATA)")
    parser.add_argument("--template", help="class sub-folders: the caption, with {} for the folder's name")
    args = parser.parse_intermixed_args(argv)
    threads = threads_setting(args.settings, args.threads)
    at_least(args.steps, 1, "--steps")
    at_least(args.size, 1, "--size")
    if args.vqgan and args.recipe in ("vqgan", "all") or args.base and args.recipe == "prior":
        raise UserError(f"train {args.recipe} takes " + ("--vqgan (the VQGAN whose tokens it writes), not --from"
                        if args.recipe == "prior" else "--from, not --vqgan (that is for train prior and clip)"))

    from ..machine.device import pick_device
    from ..train import settings
    from ..train.distributed import ranks_from_env

    given = {"steps": args.steps, "seed": args.seed, "base": args.base}
    if args.recipe != "prior":
        given["size"] = args.size
    config = settings.build_config(args.recipe, args.out, args.settings, data=args.data, resume=args.resume, **given)
    options = dict(held_out=args.held_out, template=args.template, resume=args.resume,
                   device=str(pick_device(args.device)), progress=not args.quiet, vqgan=args.vqgan, size=args.size)
    with training("train", argv, threads, args.quiet):
        metrics = settings.run(args.recipe, args.data, args.out, config, **options)
    if ranks_from_env().main:  # under torchrun, one summary
        print(json.dumps(summary(metrics)))
    return 0


def summary(metrics: dict) -> dict:
    """The figures of a metrics dict, without its history and settings (those are in the JSON files)."""
    if all(isinstance(v, dict) for v in metrics.values()):
        return {name: summary(value) for name, value in metrics.items()}
    return {k: v for k, v in metrics.items() if k not in ("history", "config", "train", "skipped_examples")}


@command("shapes")
def shapes_command(argv: list[str]) -> int:
    if argv[:1] == ["train"]:
        recipe = argv[1] if len(argv) > 1 and argv[1] in ("vqgan", "clip", "prior") else "vqgan|clip|prior"
        raise UserError(f"vqclip shapes train is now: vqclip train {recipe} shapes --out DIR (or all three and "
                        "a preset: vqclip train all shapes --out DIR)")
    parser = Parser(prog="vqclip shapes", description="The embedded shapes world: grade what a preset draws. "
                    "Train its models with: vqclip train all shapes --out DIR")
    sub = parser.add_subparsers(dest="action", required=True)
    grade = sub.add_parser("eval", help="generate prompts and grade the images by their pixels")
    grade.add_argument("--prompts", help="a text file, one prompt per line (default: 8 colours × 3 shapes)")
    flags.add(grade, "seeds", preset={"default": "shapes"},
              out={"default": "outputs/shapes-eval", "help": "folder for the images and eval.json"},
              settings={"help": "key=value, e.g. steps=50 init.mode=random"})
    grade.add_argument("--init", choices=["random", "prior"], help="where each run starts (random: random codes "
                       "with no pull toward them, init.weight=0; prior: the shipped shapes prior unless "
                       "init.prior=... says otherwise)")
    args = parser.parse_args(argv)
    at_least(args.seeds, 1, "--seeds")

    from pathlib import Path

    from ..shapes import evaluate

    prompts = evaluate.read_prompts(args.prompts) if args.prompts else evaluate.default_prompts()
    out = Path(args.out)
    # random: plain CLIP guidance from random codes, without the preset's pull toward the (prior's) start
    starts = {"prior": ["init.mode=prior", "init.prior=shapes"], "random": ["init.mode=random", "init.weight=0"]}
    init = starts[args.init] if args.init else []
    report = evaluate.evaluate(prompts, args.seeds, preset=args.preset, out=out, dotlist=init + args.settings)
    return write_report(report, evaluate.format_table(report), out)


def grading_parser(world: str, about: str, unit: str) -> tuple[Parser, Parser]:
    """`vqclip WORLD eval`'s parser with the options every world's grading takes, and its eval sub-parser."""
    parser = Parser(prog=f"vqclip {world}", description=f"The {world} world: grade what a preset draws.")
    grade = parser.add_subparsers(dest="action", required=True).add_parser("eval", help=about)
    flags.add(grade, "prior_samples", preset={"default": world}, seeds={"help": f"seeds per {unit}"},
              out={"default": f"outputs/{world}-eval", "help": "folder for the images and eval.json"},
              settings={"help": "key=value, e.g. steps=20 init.weight=10"})
    return parser, grade


def checked_grading(args) -> None:
    at_least(args.seeds, 1, "--seeds")
    at_least(args.prior_samples, 0, "--prior-samples")


@command("digits")
def digits_command(argv: list[str]) -> int:
    parser, grade = grading_parser("digits", 'draw "the digit 0" ... "the digit 9" and judge the images with a '
                                   "classifier of real held-out digits (needs: pip install 'vqclip[digits]')", "digit")
    grade.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="which digits to draw, e.g. 3,7 (default: all)")
    args = parser.parse_args(argv)
    digits = tuple(int(d) for d in args.digits.split(",") if d.strip().isdigit() and int(d) <= 9)
    if not digits or len(digits) != len(args.digits.split(",")):
        raise UserError(f"--digits takes digits 0 to 9 separated by commas (e.g. 3,7), not {args.digits!r}")
    checked_grading(args)

    from pathlib import Path

    from ..digits import evaluate

    report = evaluate.evaluate(args.seeds, preset=args.preset, out=Path(args.out), dotlist=args.settings,
                               prior_samples=args.prior_samples, digits=digits)
    return write_report(report, evaluate.format_table(report), Path(args.out))


@command("emoji")
def emoji_command(argv: list[str]) -> int:
    parser, grade = grading_parser("emoji", "draw held-out (emoji, background) pairs, never trained on, and judge "
                                   "them against every emoji of the font (needs Debian's fonts-noto-color-emoji)",
                                   "pair")
    grade.add_argument("--pairs", type=int, default=100, help="held-out pairs to draw (default 100)")
    args = parser.parse_args(argv)
    at_least(args.pairs, 1, "--pairs")
    checked_grading(args)

    from pathlib import Path

    from ..emoji import evaluate

    report = evaluate.evaluate(args.pairs, args.seeds, preset=args.preset, out=Path(args.out), dotlist=args.settings,
                               prior_samples=args.prior_samples)
    return write_report(report, evaluate.format_table(report), Path(args.out))


def write_report(report: dict, table: str, out) -> int:
    """A grading's table on stdout, its report in OUT/eval.json (and that path on stdout)."""
    from ..outputs import write_json

    print(table)
    write_json(out / "eval.json", report)
    print(out / "eval.json")
    return 0
