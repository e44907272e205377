"""What every command's parsing shares: the registry of commands, a parser whose usage errors are
one line, the `key=value` test, and the frame a training command runs in."""

from __future__ import annotations

import argparse
import contextlib
import shlex

from ..errors import UserError

COMMANDS = {}
COMPUTING = set()  # the commands that run torch: each one under the thread policy (vqclip.machine.threads)


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


def is_override(arg: str) -> bool:
    """`key=value` (a config override) as opposed to a prompt: the key is a dotted identifier."""
    key, eq, _ = arg.partition("=")
    return bool(eq) and all(part.isidentifier() for part in key.split("."))


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """(the words, the key=value overrides) among a command's positional arguments."""
    return [a for a in items if not is_override(a)], [a for a in items if is_override(a)]


def at_least(value: int | None, least: int, flag: str) -> None:
    if value is not None and value < least:
        raise UserError(f"{flag} must be at least {least}, not {value}")


@contextlib.contextmanager
def training(command: str, argv: list[str], threads: int | None, quiet: bool):
    """A training command's run: under the thread policy, and on Ctrl-C or SIGTERM (the loop has saved
    its state) the command that continues it."""
    from ..interrupt import Interrupted
    from ..machine.threads import run_threads, warn_if_cores_are_shared
    from ..train.distributed import ranks_from_env

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
    at_least(flag, 1, "--threads")
    return flag


def parse_action(parser: Parser, actions: dict[str, Parser], argv: list[str]):
    """(action, its arguments) for a command with sub-commands (`vqclip video animate ...`).

    argparse cannot mix options and positionals after a sub-command (`... "a prompt" --frames 4
    zoom=1.05`), so the sub-command's own parser reads the rest; `parser` answers --help and the
    options given before any sub-command (action None)."""
    if argv and argv[0] in actions:
        return argv[0], actions[argv[0]].parse_intermixed_args(argv[1:])
    return None, parser.parse_args(argv)
