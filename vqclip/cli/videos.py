"""`vqclip video animate|interpolate|restyle ...` and `vqclip video --resume RUN_DIR`."""

from __future__ import annotations

from ..errors import UserError
from . import flags
from .parsing import Parser, command, parse_action, split_overrides

USAGES = {"animate": ("frames that move (zoom, rotate, translate)", "PROMPT... [--frames N] [--fps F] [-o OUT]"),
          "interpolate": ("in-betweens in latent space (or of one video's frames)",
                          "KEY KEY... [--between N] [-o OUT]  |  VIDEO_OR_FOLDER --between N"),
          "restyle": ("an input video, frame by frame, restyled", "INPUT PROMPT... [-o OUT]")}


def video_parsers() -> tuple[Parser, dict[str, Parser]]:
    parser = Parser(prog="vqclip video", description="Make a video (mp4, gif, or a folder of PNG frames when OUT "
                    "has no extension). A killed run continues with: vqclip video --resume RUN_DIR")
    flags.add(parser, "quiet", resume=flags.RESUME_RUN)
    sub = parser.add_subparsers(dest="action", metavar="{animate,interpolate,restyle}")
    actions = {}
    for action, (about, usage) in USAGES.items():
        one = actions[action] = sub.add_parser(action, help=about, usage=f"%(prog)s {usage} [key=value ...]",
                                               description=f"{about}. A killed run continues with: "
                                               "vqclip video --resume RUN_DIR",
                                               epilog="Any config key can be set as key=value, e.g. "
                                               "video.zoom='0: 1.0, 30: 1.05'.")
        one.add_argument("items", nargs="*", help="prompts / keys / input, and key=value overrides")
        flags.add(one, "seed", "threads", "run_dir", "quiet", size=flags.IMAGE_SIZE, resume=flags.RESUME_RUN,
                  preset={"help": "a preset name or YAML file (default: zoom, morph or restyle)"},
                  output={"help": "the video: .mp4, .gif or a folder (default RUN_DIR/video.mp4)"})
        one.add_argument("--fps", type=float, help="frames per second of the written video")
        one.add_argument("--steps-per-frame", type=int)
    actions["animate"].add_argument("--frames", type=int, help="frames to make")
    flags.add(actions["restyle"],
              mask={"help": "restyle only this region: a mask picture (white = may change) for every frame, or a "
                            "mask video of the same length"},
              mask_box={"help": "the region to restyle, as a box: fractions of the frame (all ≤ 1) or pixels"},
              mask_invert={"help": "restyle the black part of the mask instead"})
    between = actions["interpolate"]
    between.add_argument("--between", type=int, help="frames made between each pair of keys")
    between.add_argument("--method", help="lerp | slerp")
    between.add_argument("--ease", help="linear | cosine | ease-in-out")
    between.add_argument("--guided", type=int, metavar="STEPS", help="CLIP steps per in-between frame")
    return parser, actions


@command("video")
def video_command(argv: list[str]) -> int:
    from .. import video  # its functions import torch on first use: --help stays instant
    from ..config import overrides_from_flags

    action, args = parse_action(*video_parsers(), argv)
    if args.resume_dir:
        print(video.resume(args.resume_dir, overrides={"quiet": True} if args.quiet else None).output)
        return 0
    if action is None:
        raise UserError("vqclip video needs one of animate, interpolate, restyle (or --resume RUN_DIR) "
                        "(see: vqclip video --help)")
    items, dotlist = split_overrides(args.items)  # video.zoom=0: 1.0, 30: 1.05 works unquoted
    names = ("fps", "steps_per_frame", "frames", "between", "method", "ease", "guided", "size", "seed", "output",
             "run_dir", "threads", "mask", "mask_box")
    overrides = overrides_from_flags({**{name: getattr(args, name, None) for name in names},
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
