"""The commands that make images: `vqclip PROMPT...` (generate), `vqclip upscale`, `vqclip sweep`,
`vqclip batch`, `vqclip prior sample`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from . import flags
from .parsing import COMMANDS, Parser, at_least, command, is_override, parse_action, split_overrides


def generate_parser() -> Parser:
    parser = Parser(prog="vqclip", description="Generate an image from text by VQGAN+CLIP optimisation. "
                    "Other commands: " + ", ".join(sorted(COMMANDS)) + ".",
                    epilog="Any config key can be set as key=value, e.g. cutn=16 init.weight=0.5. "
                    "A first run, offline in seconds: vqclip \"a red circle on a blue background\" --preset shapes")
    parser.add_argument("prompts", nargs="*", help='text prompts, "text[:weight[:stop]]"; key=value overrides')
    flags.add(parser, "preset", "output", "steps", "seed", "mask", "mask_box", "mask_invert", "run_dir", "threads",
              "quiet", size=flags.IMAGE_SIZE, resume=flags.RESUME_RUN,
              **{"from": {"metavar": "PNG", "help": "run again with the settings stored in a vqclip PNG"}})
    parser.add_argument("--init-image", help="start from this image (sets init.mode=image)")
    parser.add_argument("--outpaint", type=int, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                        help="grow the canvas around the init image by these pixels and fill the new border")
    parser.add_argument("--image-prompt", action="append", default=[], help="PATH[:weight], repeatable")
    parser.add_argument("--noise-prompt", action="append", default=[], help="SEED[:weight], repeatable")
    parser.add_argument("--batch", type=int, help="candidates optimised together; the best is final.png")
    parser.add_argument("--tile", action="store_true", help="a seamless tile (tile=true); final-3x3.png shows it "
                        "repeated")
    parser.add_argument("--symmetry", help="mirror the picture: horizontal (left = right) | vertical (top = bottom) "
                        "| both (symmetry_weight sets the pull)")
    parser.add_argument("--palette", dest="palette_colours", metavar="COLOURS", type=lambda text: text.split(","),
                        help="draw with these hex colours, comma-separated: '#264653,#e9c46a,#e76f51' "
                        "(palette.quantize=true writes an indexed PNG)")
    parser.add_argument("--palette-from", metavar="IMAGE", help="draw with the colours of this picture "
                        "(palette.size of them, by k-means)")
    return parser


@command("generate")
def generate_command(argv: list[str]) -> int:
    args = generate_parser().parse_intermixed_args(argv)  # before the heavy imports: --help stays instant

    from ..config import overrides_from_flags
    from ..generation import generate_from_cli

    prompts, dotlist = split_overrides(args.prompts)
    warn_key_like_prompts(prompts)
    overrides = overrides_from_flags({
        "prompts": prompts or None, "steps": args.steps, "size": args.size, "seed": args.seed,
        "output": args.output, "batch": args.batch, "run_dir": args.run_dir, "quiet": args.quiet or None,
        "threads": args.threads, "image_prompt": args.image_prompt or None, "noise_prompt": args.noise_prompt or None,
        "init_image": args.init_image, "mask": args.mask, "mask_box": args.mask_box,
        "mask_invert": args.mask_invert or None, "outpaint": args.outpaint, "tile": args.tile or None,
        "symmetry": args.symmetry, "palette_colours": args.palette_colours, "palette_from": args.palette_from})
    result = generate_from_cli(preset=args.preset, overrides=overrides, dotlist=dotlist,
                               from_image=args.base, resume_dir=args.resume_dir)
    print(result.final_path)
    if result.run_dir not in result.final_path.parents:  # -o: say where the rest of the run is
        print(f"vqclip: the run folder (for --resume) is {result.run_dir}", file=sys.stderr)
    return 0


def warn_key_like_prompts(prompts: list[str]) -> None:
    """A bare `cutn` is drawn as the word "cutn": likely a key=value that lost its value."""
    words = [text for text in prompts if is_override(f"{text}=")]
    if words:
        import logging

        from ..config import key_names

        for word in set(words) & key_names():
            logging.getLogger("vqclip.cli").warning("the prompt %r is also a config key: to set it, write %s=VALUE",
                                                    word, word)


@command("batch")
def batch_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip batch", description="Run the jobs of a batch file (defaults, a grid, a list); "
                    "OUT gets a folder per job, summary.jsonl and contact_sheet.png.")
    parser.add_argument("file", help="the batch YAML file")
    flags.add(parser, out={"required": True, "help": "the batch's output folder"},
              resume={"help": "continue the batch in OUT: skip the jobs finished with the same settings"},
              threads={"help": "torch CPU threads per job (same seed + threads = same image)"})
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (one GPU each if several)")
    flags.add(parser, ray={"help": "run the jobs as Ray tasks: a new local Ray, or the cluster at ADDRESS "
                                   "(HOST:PORT, ray://HOST:PORT, auto)"})
    parser.add_argument("--overwrite", action="store_true", help="first remove the batch already in OUT (its "
                        "summary.jsonl, contact_sheet.png and job folders; other files stay)")
    args = parser.parse_args(argv)

    from ..batch import read_batch_file, run
    from ..interrupt import Interrupted

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


@command("upscale")
def upscale_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip upscale", description="Enlarge a picture 2 or 4 times and refine it with CLIP "
                    "toward a prompt (or, without one, toward the picture itself). A run like any other: it "
                    "writes a run folder, and --resume and --from work.")
    parser.add_argument("image", help="the picture to enlarge")
    parser.add_argument("prompts", nargs="*", help='text prompts, "text[:weight[:stop]]"; key=value overrides')
    parser.add_argument("--scale", type=int, required=True, help="2 or 4")
    flags.add(parser, "preset", "output", "steps", "seed", "run_dir", "threads", "quiet")
    args = parser.parse_intermixed_args(argv)

    from ..config import build_config, merge_settings, overrides_from_flags
    from ..controls.upscale import upscale_overrides
    from ..generation import run

    prompts, dotlist = split_overrides(args.prompts)
    flags_given = overrides_from_flags({"steps": args.steps, "seed": args.seed, "output": args.output,
                                        "run_dir": args.run_dir, "threads": args.threads, "quiet": args.quiet or None})
    config = build_config(args.preset or "default",
                          merge_settings(upscale_overrides(args.image, args.scale, prompts), flags_given), dotlist)
    result = run(config)
    print(result.final_path)
    return 0


@command("sweep")
def sweep_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip sweep", description="Run many seeds of one prompt a few steps each and give the "
                    "best ones the rest (successive halving): as many steps in all as --keep plain runs. OUT gets a "
                    "run folder per seed, summary.jsonl and contact_sheet.png.")
    parser.add_argument("prompts", nargs="*", help='text prompts, "text[:weight[:stop]]"; key=value overrides')
    parser.add_argument("--keep", type=int, required=True, help="runs that go to the end (below --seeds)")
    flags.add(parser, "preset", "steps", "seed", "threads", "quiet", size=flags.IMAGE_SIZE,
              seeds={"required": True, "default": None, "help": "seeds to start (from --seed, else 0, on)"},
              out={"required": True, "help": "the sweep's folder (the same folder and settings continue a sweep)"},
              output={"help": "also write the best image here"},
              ray={"help": "run each round's seeds at once as Ray tasks (a CPU each unless --threads): a new local "
                           "Ray, or the cluster at ADDRESS, whose workers see --out"})
    args = parser.parse_intermixed_args(argv)

    from ..batch.seed_sweep import sweep
    from ..config import build_config, overrides_from_flags
    from ..machine.threads import run_threads
    from ..outputs import load_image, read_metadata, save_image

    prompts, dotlist = split_overrides(args.prompts)
    config = build_config(args.preset or "default", overrides_from_flags({
        "prompts": prompts or None, "steps": args.steps, "size": args.size, "seed": args.seed,
        "threads": args.threads, "quiet": args.quiet or None}), dotlist)
    with run_threads(config.threads, quiet=config.quiet):
        result = sweep(config, args.out, args.seeds, args.keep, ray=args.ray)
    for rank, run in enumerate(result.runs[:result.kept]):
        print(f"{rank + 1}. seed {run.seed}: score {run.score:.4f} after {run.steps} steps  {run.run_dir / 'final.png'}")
    if args.output:
        best = result.best.run_dir / "final.png"
        save_image(args.output, load_image(best, what="best image")[0], read_metadata(best))
        print(args.output)
    print(Path(args.out) / "contact_sheet.png")
    return 0


MOVED = {"train": "vqclip train prior DATA --vqgan VQGAN --out DIR (it encodes the images and trains)",
         "build-data": "vqclip train prior DATA --vqgan VQGAN --out DIR (it encodes into DIR/data.pt, then trains)"}


@command("prior")
def prior_command(argv: list[str]) -> int:
    if argv[:1] and argv[0] in MOVED:
        raise UserError(f"vqclip prior {argv[0]} is now: {MOVED[argv[0]]}")
    parser = Parser(prog="vqclip prior", description="The BART prior (DALL-E mini): draw images from it. "
                    "Train one with: vqclip train prior")
    sub = parser.add_subparsers(dest="action", metavar="sample")
    sample = sub.add_parser("sample", help="draw images for a prompt, ranked by CLIP")
    sample.add_argument("prompt")
    flags.add(sample, "threads", "quiet", "settings",
              output={"required": True, "help": "the best image; with --num N also OUTPUT-0..N-1"},
              preset={"default": "default", "help": "where the VQGAN and CLIP come from"},
              seed={"help": "the sampling seed (default: the prior's recommendation, else 0)"})
    sample.add_argument("--num", type=int, help="samples to draw and rank (default: the prior's recommendation, "
                        "else 8)")
    sample.add_argument("--prior", help="a prior name (vqclip models list) or folder (default: the preset's init.prior)")
    sample.add_argument("--temperature", type=float, help="default: the prior's recommendation, else 1")
    sample.add_argument("--top-k", type=int, help="default: the prior's recommendation, else 256")
    sample.add_argument("--top-p", type=float, help="default: the prior's recommendation, else 1")
    sample.add_argument("--supercondition", type=float, help="s in uncond·(1−s) + cond·s (default: the "
                        "prior's recommendation, else 4)")
    action, args = parse_action(parser, {"sample": sample}, argv)
    if action is None:
        raise UserError("vqclip prior needs: sample PROMPT -o OUT (see: vqclip prior sample --help)")
    at_least(args.num, 1, "--num")

    from ..config import build_config, overrides_from_flags
    from ..machine.threads import run_threads
    from ..prior import commands as prior_commands

    config = build_config(args.preset, overrides_from_flags({"quiet": args.quiet or None, "threads": args.threads}),
                          args.settings)
    options = dict(count=args.num, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   supercondition=args.supercondition, seed=args.seed)
    with run_threads(config.threads, quiet=config.quiet):
        for path in prior_commands.sample_job(args.prompt, args.output, config, options, args.prior):
            print(path)
    return 0
