"""The docs stay true to the code: README.md, docs/*.md and CHANGELOG.md.

- Every `vqclip ...` / `python run.py ...` command they show (```bash blocks, and inline code that
  starts with `vqclip `) parses with the real command line, and its `key=value` settings are
  accepted by the config schema. The jobs never run: the functions the CLI hands the parsed
  arguments to are replaced by fakes that check the settings and return at once.
- Every `key=value` shown as inline code is a real setting (the run config, or a training recipe's
  setting for `vqclip train`).
- docs/configuration.md lists exactly the schema's keys, defaults and comments: its tables are
  generated from vqclip/config.py. `python tests/test_docs.py` rewrites them.
- Every relative link points to a file (and heading) that exists; the README stays short.

docs/experiments.md is a dated log: its commands ran at the commits it names (some of that code is
no longer shipped), so they are not parsed here; its links are checked.

Nothing here loads a model. Run alone: `OMP_NUM_THREADS=1 python -m pytest -q tests/test_docs.py`.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import io
import re
import shlex
import sys
import tokenize
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
LOGS = {"experiments.md"}  # dated records: commands ran at the commits they name
README_MAX_LINES = 350
MAIN_COMMAND = 'python run.py "a red circle on a blue background" --preset shapes'
TEST_COMMAND = "python -m pytest -q"


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def checked_files() -> list[Path]:
    """The pages whose commands and settings must work today (not the dated logs)."""
    return [path for path in doc_files() if path.name not in LOGS]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- reading markdown ----------------------------------------------------------------------------
FENCE = re.compile(r"^(```+|~~~+)\s*([\w-]*)")


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of each fenced code block."""
    blocks, inside, lang, start, lines, marker = [], False, "", 0, [], ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line.strip())
        if not inside and match:
            inside, marker, lang, start, lines = True, match.group(1), match.group(2).lower(), number + 1, []
        elif inside and line.strip().startswith(marker[:3]) and line.strip().strip(marker[0]) == "":
            blocks.append((lang, start, lines))
            inside = False
        elif inside:
            lines.append(line)
    return blocks


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, inside, marker = [], False, ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line.strip())
        if not inside and match:
            inside, marker = True, match.group(1)
        elif inside and line.strip().startswith(marker[:3]) and line.strip().strip(marker[0]) == "":
            inside = False
        elif not inside:
            out.append((number, line))
    return out


def inline_code(text: str) -> list[tuple[int, str]]:
    """(line number, content) of each `inline code` span outside code blocks (table pipes unescaped)."""
    spans = []
    for number, line in prose_lines(text):
        for match in re.finditer(r"(`+)(.+?)\1", line):
            spans.append((number, match.group(2).strip().replace("\\|", "|")))
    return spans


def shell_commands(lines: list[str]) -> list[tuple[int, str]]:
    """(line offset, logical line) of a shell block: `\\` continuations and open quotes joined."""
    commands, buffer, start = [], "", 0
    for offset, line in enumerate(lines):
        if not buffer:
            start = offset
            buffer = line
        else:
            buffer += ("\n" if _open_quote(buffer) else " ") + line
        if buffer.rstrip().endswith("\\") and not _open_quote(buffer.rstrip()[:-1]):
            buffer = buffer.rstrip()[:-1]
            continue
        if _open_quote(buffer):
            continue
        commands.append((start, buffer))
        buffer = ""
    if buffer:
        commands.append((start, buffer))
    return commands


def _open_quote(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def split_pipeline(line: str) -> list[list[str]]:
    """A shell line as its simple commands (split at ; && || | and redirections), comments dropped."""
    lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= set("();<>|&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [command for command in commands if command]


def vqclip_argv(words: list[str]) -> list[str] | None:
    """The arguments after `vqclip`, `python run.py` or `torchrun ... -m vqclip`, or None for any other command."""
    if words[:1] == ["vqclip"]:
        return words[1:]
    if words[:1] == ["torchrun"] and "-m" in words and words[words.index("-m") + 1:][:1] == ["vqclip"]:
        return words[words.index("-m") + 2:]
    if len(words) >= 2 and words[0] in ("python", "python3") and words[1] == "run.py":
        return words[2:]
    return None


def shown_commands(path: Path) -> list[tuple[str, list[str], bool]]:
    """(where, argv, is_mention) for each vqclip command in a page. A mention is inline code that
    only names a command (`vqclip prior sample`): it is checked with --help instead."""
    text = path.read_text(encoding="utf-8")
    found = []
    for lang, start, lines in fenced_blocks(text):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for offset, line in shell_commands(lines):
            for words in split_pipeline(line):
                argv = vqclip_argv([word for word in words if word != "..."])  # "..." : and so on
                if argv is not None:
                    found.append((f"{rel(path)}:{start + offset}", argv, False))
    for number, span in inline_code(text):
        if not span.startswith("vqclip "):
            continue
        for words in split_pipeline(span)[:1]:  # `vqclip video animate|interpolate`: the first
            argv = vqclip_argv([word for word in words if word != "..."])
            if argv is not None:
                found.append((f"{rel(path)}:{number}", argv, is_mention(argv)))
    return found


def is_mention(argv: list[str]) -> bool:
    from vqclip.cli import COMMANDS

    return (0 < len(argv) <= 3 and argv[0] in COMMANDS and argv[0] != "generate"
            and all(re.fullmatch(r"[a-z][a-z-]*", word) for word in argv))


# -- running the CLI without running a job --------------------------------------------------------
def _generation_config(preset, overrides, dotlist, from_image=None, resume_dir=None):
    from vqclip import generation
    from vqclip.config import build_config
    from vqclip.prompts import parse_image_prompt, parse_noise_prompt

    if from_image:
        base = None  # the stored settings stand in for the preset
    elif resume_dir:
        base = preset or "default"
    else:
        base = _checkable(preset)
    config = build_config(base, overrides, dotlist)
    generation.build_timeline(config)
    generation.check_output_path(config.output)
    for text in config.image_prompts:
        parse_image_prompt(text)
    for text in config.noise_prompts:
        parse_noise_prompt(text)
    return SimpleNamespace(final_path=Path("run/final.png"), run_dir=Path("run"), output=Path("run/video.mp4"))


def _fake_sweep(config, out, seeds, keep, models=None, ray=None):
    from PIL import Image

    from vqclip.batch.seed_sweep import SeedRun, SweepResult, halving_rounds

    rounds = halving_rounds(seeds, keep, int(config.steps))
    runs = [SeedRun(seed, 0.0, rounds[-1].steps, Path(out) / f"seed-{seed}") for seed in range(seeds)]
    runs[0].run_dir.mkdir(parents=True)  # in the test's folder: -o copies the best picture
    Image.new("RGB", (8, 8)).save(runs[0].run_dir / "final.png")
    return SweepResult(runs, keep, Path(out))


def _fake_upscale_overrides(image, scale, prompts):
    """upscale_overrides without reading the picture (the docs name pictures the test folder lacks)."""
    from vqclip.controls.upscale import SCALES
    from vqclip.errors import UserError

    if scale not in SCALES:
        raise UserError(f"--scale {scale}")
    return {"size": [128, 128], "init": {"mode": "image", "image": str(image)},
            **({"prompts": list(prompts)} if prompts else {"image_prompts": [str(image)]})}


def _fake_video(kind, inputs, config, models=None, **options):
    from vqclip.video.commands import check_video_config

    check_video_config(config)
    return SimpleNamespace(output=Path("run/video.mp4"))


def _fake_sample_job(prompt, out, config, options, prior_spec):
    from vqclip.prior.sample import settings_for

    settings_for({}, **options)
    return []


def _checkable(preset: str | None) -> str:
    """The preset whose settings a shown command is checked against: a user's preset file (one the
    docs train, say) is not there, so only the settings around it can be checked, over the defaults."""
    from vqclip.config import preset_names

    return preset if preset in preset_names() else "default"


def _fake_evaluate(prompts, seeds, *, preset, out, dotlist):
    from vqclip.config import build_config

    build_config(_checkable(preset), dotlist=dotlist)
    return {}


def _fake_check_models(preset, overrides):
    from vqclip.config import build_config

    build_config(preset or "default", dotlist=overrides)
    return 0


@pytest.fixture
def offline_cli(monkeypatch, tmp_path):
    """vqclip.cli.main with every job replaced by a fake that checks its settings and returns."""
    import vqclip.batch
    import vqclip.batch.seed_sweep
    import vqclip.bench.concurrent
    import vqclip.bench.step
    import vqclip.bench.time_to_image
    import vqclip.bench.window_memory
    import vqclip.cli
    import vqclip.cli.inspection
    import vqclip.controls.upscale
    import vqclip.digits.evaluate
    import vqclip.emoji.evaluate
    import vqclip.generation
    import vqclip.machine.device
    import vqclip.models.clip
    import vqclip.models.registry
    import vqclip.outputs
    import vqclip.prior.commands
    import vqclip.shapes.data
    import vqclip.shapes.evaluate
    import vqclip.train.settings
    import vqclip.ui.access
    import vqclip.ui.app
    import vqclip.video.commands
    from vqclip.digits import data as digits

    monkeypatch.chdir(tmp_path)  # nothing is written, but if it were, it would land here
    patches = {
        (vqclip.generation, "generate_from_cli"): _generation_config,
        # a command naming --device cuda parses on a machine without one
        (vqclip.machine.device, "pick_device"): lambda name: "cpu" if name == "auto" else name,
        (vqclip.video.commands, "make_video"): _fake_video,
        (vqclip.batch.seed_sweep, "sweep"): _fake_sweep,
        (vqclip.controls.upscale, "upscale_overrides"): _fake_upscale_overrides,
        (vqclip.generation, "run"): lambda config, **kwargs: SimpleNamespace(final_path=Path("run/final.png")),
        (vqclip.video.commands, "resume"): lambda run_dir, overrides=None, models=None: SimpleNamespace(output=run_dir),
        (vqclip.prior.commands, "sample_job"): _fake_sample_job,
        (vqclip.shapes.evaluate, "evaluate"): _fake_evaluate,
        (vqclip.shapes.evaluate, "format_table"): lambda report: "",
        (vqclip.shapes.evaluate, "read_prompts"): lambda path: ["a red circle"],
        (vqclip.digits.evaluate, "evaluate"): lambda seeds, *, preset, out, dotlist, **kwargs: _fake_evaluate(
            [], seeds, preset=preset, out=out, dotlist=dotlist),
        (vqclip.digits.evaluate, "format_table"): lambda report: "",
        (vqclip.emoji.evaluate, "evaluate"): lambda pairs, seeds, *, preset, out, dotlist, **kwargs: _fake_evaluate(
            [], seeds, preset=preset, out=out, dotlist=dotlist),
        (vqclip.emoji.evaluate, "format_table"): lambda report: "",
        (vqclip.outputs, "write_json"): lambda *args, **kwargs: None,
        (vqclip.outputs, "read_metadata"): lambda path: {},
        (vqclip.shapes.data, "write_shapes"): lambda out, count=4096: {"train": count, "held-out": 256},
        (vqclip.train.settings, "run"): lambda *args, **kwargs: {},  # the settings are built (and checked) before
        (digits, "write_digits"): lambda out, size=32: {"train": 0, "held-out": 0},
        (vqclip.models.clip, "load_clip_ensemble"): lambda *args, **kwargs: None,
        (vqclip.cli.inspection, "check_models"): _fake_check_models,
        (vqclip.models.registry, "download_by_name"): lambda name: [],
        (vqclip.ui.access, "read_logins"): lambda auth, auth_file=None: (
            [("user", "password")] if auth or auth_file else []),
        (vqclip.ui.app, "serve"): lambda *args, **kwargs: None,
        (vqclip.batch, "read_batch_file"): lambda path: [],
        (vqclip.batch, "run"): lambda *args, **kwargs: iter(()),
        (vqclip.bench.step, "bench"): lambda **kwargs: {},
        (vqclip.bench.step, "format_report"): lambda result: "",
        (vqclip.bench.window_memory, "canvas_memory"): lambda *args, **kwargs: {},
        (vqclip.bench.window_memory, "format_canvas"): lambda report: "",
        (vqclip.bench.concurrent, "concurrent"): lambda *args, **kwargs: {},
        (vqclip.bench.concurrent, "format_concurrent"): lambda result: "",
        (vqclip.bench.time_to_image, "time_to_image"): lambda *args, **kwargs: {},
        (vqclip.bench.time_to_image, "format_time_to_image"): lambda report: "",
    }
    for (module, name), fake in patches.items():
        assert hasattr(module, name), f"{module.__name__}.{name} is gone: update tests/test_docs.py"
        monkeypatch.setattr(module, name, fake)

    def run(argv: list[str]) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = vqclip.cli.main(list(argv))
            except SystemExit as exc:  # argparse's --help
                code = exc.code or 0
        return code, err.getvalue().strip()

    return run


COMMANDS = [(where, argv, mention) for path in checked_files() for where, argv, mention in shown_commands(path)]


def test_the_docs_show_commands():
    assert len(COMMANDS) > 50, "the command extraction found too few commands: is it broken?"


@pytest.mark.parametrize("where, argv, mention", COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_shown_command_parses(offline_cli, where, argv, mention):
    code, err = offline_cli(argv + ["--help"] if mention else argv)
    assert code == 0, f"{where}: vqclip {shlex.join(argv)}\n  -> exit {code}: {err}"


# -- key=value shown in the prose ------------------------------------------------------------------
KEY_VALUE = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*=")


def shown_settings(path: Path) -> list[tuple[str, str]]:
    found = []
    for number, span in inline_code(path.read_text(encoding="utf-8")):
        if not KEY_VALUE.match(span):
            continue
        try:
            words = shlex.split(span)
        except ValueError:
            words = [span]
        items = words if all(KEY_VALUE.match(word) for word in words) else [span]
        found += [(f"{rel(path)}:{number}", item) for item in items]
    return found


SETTINGS = [item for path in checked_files() for item in shown_settings(path)]


@pytest.mark.parametrize("where, item", SETTINGS, ids=[f"{where} {item}" for where, item in SETTINGS])
def test_shown_setting_is_accepted(where, item):
    from vqclip.config import build_config, key_names
    from vqclip.errors import UserError
    from vqclip.train.settings import build_config as recipe_config

    key, _, value = item.partition("=")
    if item == "key=value":  # the placeholder itself
        return
    recipes = recipe_settings()
    assert key in key_names() | set(recipes), f"{where}: {key} is neither a config key nor a training setting"
    if not value or value == "..." or re.fullmatch(r"[A-Z_]+", value):  # `threads=`, `cutn=VALUE`: the key alone
        return
    try:
        build_config(None, dotlist=[item])
    except UserError as exc:
        if key not in recipes:
            raise AssertionError(f"{where}: {item}: {exc}") from None
        recipe_config(recipes[key], Path("nowhere"), [item])


def recipe_settings() -> dict[str, str]:
    """{setting: the `vqclip train` recipe that takes it}: each recipe's keys, and `train all`'s
    own and prefixed ones (vqgan.n_embed=...)."""
    from vqclip.train.settings import RECIPES, recipe_class

    found = {}
    for recipe in RECIPES:
        for field in dataclasses.fields(recipe_class(recipe)):
            found.setdefault(field.name, recipe)
            if recipe != "all":
                found.setdefault(f"{recipe}.{field.name}", "all")
    return found


# -- batch files shown --------------------------------------------------------------------------
def shown_batch_files() -> list[tuple[str, dict]]:
    found = []
    for path in checked_files():
        for lang, start, lines in fenced_blocks(path.read_text(encoding="utf-8")):
            data = yaml.safe_load("\n".join(lines)) if lang in ("yaml", "yml") else None
            if isinstance(data, dict) and data and set(data) <= {"defaults", "grid", "jobs"}:
                found.append((f"{rel(path)}:{start}", data))
    return found


@pytest.mark.parametrize("where, data", shown_batch_files(), ids=[where for where, _ in shown_batch_files()])
def test_shown_batch_file_is_accepted(where, data, tmp_path, monkeypatch):
    """Accepted where the files its jobs name are there (they are checked as the batch is read)."""
    from vqclip.batch import parse_batch

    monkeypatch.chdir(tmp_path)
    for job in [data.get("defaults") or {}, *(data.get("jobs") or [])]:
        for key in ("keys", "input", "init_image", "image_prompt", "mask"):
            value = job.get(key)
            for name in value if isinstance(value, list) else [value] if value else []:
                (tmp_path / name).touch()
    assert parse_batch(data, source=where)


# -- the README ---------------------------------------------------------------------------------
def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail to docs/ (at most {README_MAX_LINES})"


def test_readme_shows_the_two_commands_ci_runs():
    readme = README.read_text(encoding="utf-8")
    assert MAIN_COMMAND in readme and TEST_COMMAND in readme
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert TEST_COMMAND in ci, ".ci/run must run exactly the README's test command"


# -- links --------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    anchors, seen = set(), {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def shown_links() -> list[tuple[str, Path, str]]:
    found = []
    for path in [*doc_files(), ROOT / "CHANGELOG.md"]:
        if not path.is_file():
            continue
        for number, line in prose_lines(path.read_text(encoding="utf-8")):
            for match in LINK.finditer(line):
                found.append((f"{rel(path)}:{number}", path, match.group(1)))
    return found


@pytest.mark.parametrize("where, page, target", shown_links(), ids=[f"{w} {t}" for w, _, t in shown_links()])
def test_relative_link_exists(where, page, target):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
        return
    file, _, anchor = target.partition("#")
    resolved = (page.parent / file).resolve() if file else page
    assert resolved.exists(), f"{where}: {target} points to a missing file"
    if anchor and resolved.suffix == ".md":
        assert anchor in heading_anchors(resolved), f"{where}: {target}: no heading with that anchor"


# -- docs/configuration.md, generated from the schema ------------------------------------------------
BEGIN = "<!-- begin: generated from vqclip/config.py by tests/test_docs.py (python tests/test_docs.py rewrites it) -->"
END = "<!-- end: generated -->"
# Shown only where the schema has no comment for the key.
UNCOMMENTED = {
    "steps": "optimisation steps",
    "cutn": "cutouts CLIP sees per step",
    "cut_pow": "cutout sizes: above 1 favours small cutouts, below 1 large ones",
    "lr": "the optimiser's learning rate",
    "outputs_root": "where run folders are made (outputs/DATE/NNNN-SLUG/)",
    "quiet": "no progress bar",
    "clip.models": "the CLIP models whose losses are added, each times its weight",
}


@dataclasses.dataclass
class SchemaKey:
    key: str  # dotted; clip.models[].name for a field of each list entry
    default: object
    comment: str
    section: str  # the schema's section comment above this key ("" if none)


def _comments(cls) -> dict[str, tuple[str, str]]:
    """field name -> (section comment, the field's own comment) from the dataclass's source.

    A field's own comment is the one after it on its line. Comment lines right above a field open a
    section when the field has its own comment, or when the first of them is a short heading
    ("The image."); the rest of them describe the field."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    trailing = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and lines[token.start[0] - 1].strip() != token.string.strip():
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    found = {}
    for node in ast.parse(source).body[0].body:
        if not isinstance(node, ast.AnnAssign):
            continue
        above, number = [], node.lineno - 1
        while number >= 1 and lines[number - 1].strip().startswith("#"):
            above.insert(0, lines[number - 1].strip().lstrip("#").strip())
            number -= 1
        own = trailing.get(node.lineno, "")
        section, described = "", []
        if above and own:
            section = " ".join(above)
        elif above and len(above[0].split()) <= 4 and above[0].endswith("."):
            section, described = above[0], above[1:]
        else:
            described = above
        found[node.target.id] = (section, own or " ".join(described))
    return found


def schema_keys() -> list[tuple[str, list[SchemaKey]]]:
    """(group, keys) in the schema's order: the top level, vqgan, clip, init, relaxation, mask, palette,
    hold, video."""
    from omegaconf import OmegaConf

    from vqclip import config as schema

    defaults = OmegaConf.to_container(OmegaConf.structured(schema.RunConfig))

    def keys(cls, prefix: str, values: dict) -> list[SchemaKey]:
        out = []
        for name, (section, comment) in _comments(cls).items():
            key = prefix + name
            out.append(SchemaKey(key, values[name], comment or UNCOMMENTED.get(key, ""), section))
        return out

    nested = {field.name: field for field in dataclasses.fields(schema.RunConfig)
              if dataclasses.is_dataclass(field.default_factory() if field.default_factory is not
                                          dataclasses.MISSING else None)}
    top = [key for key in keys(schema.RunConfig, "", defaults) if key.key not in nested]
    clip_entry = dataclasses.asdict(schema.ClipModelConfig())
    clip = keys(schema.ClipConfig, "clip.", defaults["clip"]) + keys(schema.ClipModelConfig, "clip.models[].", clip_entry)
    return [("Top level", top),
            ("vqgan", keys(schema.VQGANConfig, "vqgan.", defaults["vqgan"])),
            ("clip", clip),
            ("init", keys(schema.InitConfig, "init.", defaults["init"])),
            ("relaxation", keys(schema.RelaxationConfig, "relaxation.", defaults["relaxation"])),
            ("mask", keys(schema.MaskConfig, "mask.", defaults["mask"])),
            ("palette", keys(schema.PaletteConfig, "palette.", defaults["palette"])),
            ("hold", keys(schema.HoldConfig, "hold.", defaults["hold"])),
            ("video", keys(schema.VideoConfig, "video.", defaults["video"]))]


def show_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return str(value)


def _cell(text: str) -> str:
    """Table-safe: pipes escaped, and `<date>` not read as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def configuration_tables() -> str:
    """The generated part of docs/configuration.md."""
    parts = [BEGIN]
    for group, keys in schema_keys():
        parts.append(f"\n## {group}\n")
        section = None
        for key in keys:
            if key.section and key.section != section or section is None:
                if key.section:
                    parts.append(f"\n*{key.section}*\n")
                parts.append("\n| key | default | what |\n|---|---|---|")
                section = key.section
            default = show_value(key.default).replace("|", "\\|")
            parts.append(f"| `{key.key}` | `{default}` | {_cell(key.comment)} |")
    parts.append(f"\n{END}")
    return "\n".join(parts).replace("\n\n\n", "\n\n")


def documented_keys(text: str) -> dict[str, str]:
    """key -> default as docs/configuration.md's tables show them."""
    rows = re.findall(r"^\| `([^`]+)` \| `((?:[^`]|\\\|)*)` \|", text, flags=re.M)
    return {key: default.replace("\\|", "|") for key, default in rows}


def test_configuration_page_lists_the_schema():
    text = CONFIGURATION.read_text(encoding="utf-8")
    shown = documented_keys(text)
    expected = {key.key: show_value(key.default) for _, keys in schema_keys() for key in keys}
    assert not set(expected) - set(shown), f"keys missing from docs/configuration.md: {sorted(set(expected) - set(shown))}"
    assert not set(shown) - set(expected), f"keys not in the schema: {sorted(set(shown) - set(expected))}"
    wrong = {key: (shown[key], expected[key]) for key in expected if shown[key] != expected[key]}
    assert not wrong, f"defaults that differ from the schema (page, schema): {wrong}"
    assert BEGIN in text and END in text
    generated = text[text.index(BEGIN):text.index(END) + len(END)]
    assert generated == configuration_tables(), \
        "docs/configuration.md's tables differ from vqclip/config.py: run `python tests/test_docs.py`"


def test_configuration_page_covers_every_key_the_cli_knows():
    from vqclip.config import key_names

    shown = {key.replace("[]", "") for key in documented_keys(CONFIGURATION.read_text(encoding="utf-8"))}
    containers = {"vqgan", "clip", "init", "relaxation", "mask", "palette", "hold", "video"}
    assert key_names() - containers <= shown


def write_configuration_page() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    CONFIGURATION.write_text(text[:start] + configuration_tables() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    write_configuration_page()
    print(f"rewrote the generated tables of {CONFIGURATION.relative_to(ROOT)}")
