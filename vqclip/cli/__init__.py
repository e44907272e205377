"""The command line: the one place that reads argv.

`vqclip PROMPT ...` generates (the default command); the others are registered by the modules
here, one per family: generating.py (generate, batch, prior sample), videos.py, training.py (data,
train, the worlds' grading), inspection.py (models, presets, info, ui, bench). The flags several
commands share are declared once, in flags.py. Bad input ends as one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import sys

from ..errors import UserError, broken_install
from . import generating, inspection, training, videos  # noqa: F401  (each registers its commands)
from .generating import generate_parser
from .parsing import COMMANDS, COMPUTING

__all__ = ["COMMANDS", "COMPUTING", "main"]


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
            from ..machine.threads import share_cores

            share_cores()  # how torch's idle threads wait, set before torch is imported
        return COMMANDS[name](argv)
    except UserError as exc:
        print(f"vqclip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Interrupted says where the state is and how to continue
        print(f"vqclip: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vqclip info final.png | head`: the reader has stopped reading, which is no error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush is quiet too
        return 141  # what a shell reports for a command stopped by SIGPIPE
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
    import shlex

    close = difflib.get_close_matches(word, [name for name in COMMANDS if name != "generate"], n=1, cutoff=0.8)
    if close:
        raise UserError(f"{word!r} is not a command: did you mean `vqclip {shlex.join([close[0], *argv[1:]])}`? "
                        f"(to draw it as a prompt: vqclip generate {shlex.join(argv)})")


def version_line() -> str:
    """`vqclip --version`: its version and those of what decides its results (read, not imported)."""
    from ..outputs import environment_info

    info = environment_info()
    return f"vqclip {info.pop('vqclip')} (" + ", ".join(f"{name} {value}" for name, value in info.items()) + ")"
