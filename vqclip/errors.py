"""The one exception type that means "the user gave us something wrong".

The command line prints its message as a single line on stderr and exits with status 2;
anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown name, a malformed value.

    The message must say what is wrong and, where possible, how to fix it, in one line.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the caller built


def closest(name: str, choices, n: int = 3) -> str:
    """' (did you mean: a, b?)' for the choices that look like `name`, or ''."""
    import difflib

    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""


def unknown_choice(kind: str, name: str, choices) -> UserError:
    """The error for a name that is not in a registry: it names the valid choices."""
    choices = sorted(choices)
    return UserError(f"unknown {kind} {name!r}{closest(name, choices)}; valid choices: {', '.join(choices)}")


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name if it has none): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
