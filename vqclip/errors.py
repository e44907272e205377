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


def broken_install(exc: BaseException) -> UserError | None:
    """A UserError saying which torch and torchvision disagree and how to fix it, when `exc` was raised
    while importing torchvision (a CPU torch beside a CUDA torchvision fails with "operator
    torchvision::nms does not exist"); None for anything else."""
    import traceback
    from importlib import metadata

    frames = traceback.extract_tb(exc.__traceback__)
    if "torchvision" not in str(exc) and not any("torchvision" in frame.filename.split("site-packages")[-1]
                                                 for frame in frames):
        return None
    try:
        torch, torchvision = metadata.version("torch"), metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None
    build = torch.partition("+")[2]  # cpu, cu128, ... or "" (PyPI's default build)
    major, minor, patch = (torch.partition("+")[0].split(".") + ["0", "0"])[:3]
    wanted = f"0.{int(minor) + 15}.{patch}" if major == "2" and minor.isdigit() else None  # torch 2.N: vision 0.N+15
    if wanted is None:
        fix = "pip install torch torchvision (the two from the same place)"
    elif build:
        fix = (f"pip install torchvision=={wanted} --index-url https://download.pytorch.org/whl/{build} (or both "
               f"from PyPI: pip uninstall -y torch torchvision && pip install torch=={torch.partition('+')[0]} "
               f"torchvision=={wanted})")
    else:
        fix = f"pip install torchvision=={wanted}"
    return UserError(f"torchvision {torchvision} does not work with torch {torch} ({first_line(exc)}): "
                     f"install the torchvision built for it: {fix}")
