"""The commands around the runs: `vqclip models`, `presets`, `info`, `ui` and `bench`."""

from __future__ import annotations

import json
import sys

from . import flags
from .parsing import Parser, at_least, command


@command("models")
def models_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip models", description="Model files: list, download, check.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the models vqclip knows by name")
    download = sub.add_parser("download", help="fetch a model into the cache ($VQCLIP_CACHE)")
    download.add_argument("name")
    check = sub.add_parser("check", help="load the models a config names and report their shapes")
    flags.add(check, "preset", settings={"help": "key=value, e.g. vqgan.config=model.yaml"})
    args = parser.parse_args(argv)

    from ..models import registry

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
    return check_models(args.preset, args.settings)


def check_models(preset: str | None, overrides: list[str]) -> int:
    import torch

    from ..config import build_config
    from ..loading import load_models
    from ..machine.threads import run_threads

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


@command("presets", computes=False)
def presets_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip presets", description="Named run presets.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    show = sub.add_parser("show", help="print a preset merged with the defaults")
    show.add_argument("name")
    args = parser.parse_args(argv)

    from ..config import build_config, preset_names, preset_path, read_yaml, to_yaml

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
    from ..outputs import read_metadata

    print(json.dumps(read_metadata(args.image), indent=2, ensure_ascii=False))
    return 0


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
    flags.add(parser, preset={"default": "shapes", "help": "the preset the form starts with"})
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
    at_least(args.preview_every, 1, "--preview-every")

    from ..ui.access import check_listening, is_loopback, read_logins
    from ..ui.app import serve

    logins = read_logins(args.auth, args.auth_file)
    check_listening(args.host, logins, args.no_auth)  # before Gradio loads: a refusal is instant
    if args.no_auth and not is_loopback(args.host):
        print(f"vqclip ui: listening on {args.host} without a login (--no-auth): anyone who can reach this address "
              "can run jobs here", file=sys.stderr)
    serve(args.host, args.port, auth=logins, no_auth=args.no_auth, preset=args.preset, outputs_root=args.outputs,
          preview_every=args.preview_every)
    return 0


@command("bench")
def bench_command(argv: list[str]) -> int:
    parser = Parser(prog="vqclip bench", description="Time the optimisation step on random weights of the "
                    "real architectures, stage by stage, against the classic scripts' fp32 step; or, with "
                    "--concurrent K, time K whole runs started at once.")
    flags.add(parser, vqgan={"default": "imagenet_f16_16384", "help": "a VQGAN name (vqclip models list)"},
              size={"default": 256}, device={"default": "auto", "help": "auto | cpu | cuda | cuda:N"},
              steps={"help": "timed steps per path, after one warm-up step (default 3); with --concurrent, steps "
                             "per run (default 30); with --time-to-image, the classic loop's steps (default 500)"},
              threads={"help": "--concurrent: fix each run's threads (default: the usable cores)"},
              preset={"default": "shapes", "help": "--time-to-image: the preset (default shapes)"})
    parser.add_argument("--clip", default="ViT-B-32", help="an open_clip architecture, or shapes")
    parser.add_argument("--cutn", type=int, help="cutouts per step (default: the run config's cutn)")
    parser.add_argument("--precision", default="auto", help="the fast path's precision: auto | fp32 | bf16 | fp16")
    parser.add_argument("--augmentations", default="classic", help="an augmentation pipeline name or YAML file")
    parser.add_argument("--compile", default="none", help="torch.compile the fast path's decoder and CLIP: none | "
                        "default | reduce-overhead (CUDA graphs); the warm-up step pays for it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--concurrent", type=int, metavar="K", help="start K whole runs at once and compare the "
                        "time until all end with perfect sharing of the cores")
    parser.add_argument("--workload", default="shapes", help="--concurrent: shapes (the README's first command) "
                        "or real (imagenet_f16_16384 + ViT-B/32 at 128 px, random weights)")
    parser.add_argument("--window", type=int, metavar="W", help="instead: the peak memory of a step on a --size "
                        "canvas that decodes one W × W window, against a whole step at W (docs/canvases.md)")
    parser.add_argument("--time-to-image", type=int, metavar="N", help="instead: seconds until N prompts of the "
                        "shapes world reach the classic loop's score, from random codes and from the preset's start")
    args = parser.parse_args(argv)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    from ..config import RunConfig
    from ..machine.threads import run_threads

    if args.time_to_image is not None:
        from ..bench.time_to_image import format_time_to_image, time_to_image
        from ..shapes.evaluate import default_prompts

        every = default_prompts()  # 8 colours × 3 shapes: take each colour once, the shapes in turn
        prompts = [every[3 * colour + colour % 3] for colour in range(8)][:args.time_to_image]
        report = time_to_image(prompts, preset=args.preset, steps=args.steps or 500, progress=progress)
        print(json.dumps(report) if args.json else format_time_to_image(report))
        return 0
    if args.window is not None:
        from ..bench.window_memory import canvas_memory, format_canvas

        with run_threads():
            report = canvas_memory(args.vqgan, args.clip, size=args.size, window=args.window,
                                   cutn=args.cutn or RunConfig.cutn, device=args.device, progress=progress)
        print(json.dumps(report) if args.json else format_canvas(report))
        return 0
    if args.concurrent is not None:
        from ..bench.concurrent import concurrent, format_concurrent

        result = concurrent(args.concurrent, args.workload, steps=args.steps or 30, threads=args.threads,
                            progress=progress)
        print(json.dumps(result) if args.json else format_concurrent(result))
        return 0

    from ..bench.step import bench, format_report

    with run_threads():
        result = bench(vqgan=args.vqgan, clip=args.clip, size=args.size, cutn=args.cutn or RunConfig.cutn,
                       steps=args.steps or 3, device=args.device, precision=args.precision,
                       augmentations=args.augmentations, compile=args.compile, progress=progress)
    print(json.dumps(result) if args.json else format_report(result))
    return 0

