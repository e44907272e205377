"""Shared test setup, and the fixtures that several test files use.

CPU results depend on torch's thread count, and vqclip's thread policy would otherwise pick it
from how busy the machine is: the tests fix it (unless the environment already does) so that
pinned pixels and byte-identical reruns hold on a loaded machine too. tests/test_threads.py
checks the policy itself. The variable is set before torch is imported (OpenMP reads it once).

Fixtures (a test asks for one by name; nothing here is imported by a test file):
  - tiny model files in the layouts real users have: `write_tiny_vqgan`, `write_tiny_clip`,
    `random_taming_state`, `save_lightning_checkpoint`, `taming_model_config`, `write_yaml`,
    `tiny_ddconfig`, `fake_class`; a preset over tiny models that runs in a second: `tiny_preset`, and
    `make_tiny_preset(**overrides)` for one with other settings (the model files are written once);
  - `starting_z`: the latents a test's runs start optimising from (init's result, before any step);
  - the shipped shapes world: `shapes_models` (loaded once), `draw_key`, `moving_circle`, `write_clip`;
  - `min_dalle_models`: min-dalle's reference modules, imported without their side effect;
  - `free_port`: a free loopback port for a served page.
Factories (`write_...`, `draw_key`, ...) are fixtures that return the function to call.
"""

# OMP_NUM_THREADS must be set before torch is imported, so the imports follow it:
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import contextlib
import importlib
import importlib.util
import json
import socket
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

# ---- tiny model files ---------------------------------------------------------------------------
# Real taming checkpoints are Lightning pickles that name Lightning classes; Net2Net checkpoints hold
# the VQGAN under `first_stage_model.`. These write the same layouts, with small architectures.

TINY_DDCONFIG = dict(double_z=False, z_channels=16, resolution=32, in_channels=3, out_ch=3, ch=32,
                     ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], dropout=0.0)

# A real taming lossconfig: never instantiated by vqclip (it would need VGG weights).
LOSSCONFIG = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
              "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 250001,
                         "disc_weight": 0.8, "codebook_weight": 1.0}}


def _taming_model_config(kind: str = "vq", n_embed: int = 32, embed_dim: int = 16, ddconfig=None) -> dict:
    params = {"embed_dim": embed_dim, "n_embed": n_embed, "ddconfig": dict(ddconfig or TINY_DDCONFIG),
              "lossconfig": LOSSCONFIG}
    if kind == "gumbel":
        params.update(kl_weight=1e-8, temperature_scheduler_config={
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {"warm_up_steps": 0, "max_decay_steps": 1000001, "lr_start": 0.9,
                       "lr_max": 0.9, "lr_min": 1.0e-06}})
        return {"target": "taming.models.vqgan.GumbelVQ", "params": params}
    return {"target": "taming.models.vqgan.VQModel", "params": params}


def _random_taming_state(kind: str = "vq", n_embed: int = 32, embed_dim: int = 16, seed: int = 0,
                         ddconfig=None) -> dict[str, torch.Tensor]:
    """A state dict with taming's key names (`quantize.*`, plus `loss.*` training keys)."""
    from vqclip.models.vqgan import build_vqgan, taming_state_dict

    torch.manual_seed(seed)
    spec = {"kind": kind, "ddconfig": dict(ddconfig or TINY_DDCONFIG), "n_embed": n_embed,
            "embed_dim": embed_dim}
    model = build_vqgan(spec)
    state = {k: v.clone() for k, v in taming_state_dict(model).items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)
    return state


@contextlib.contextmanager
def _fake_module(qualified_class: str, bases: tuple[type, ...] = ()):
    """A class (a subclass of `bases`) importable as `qualified_class` while the block runs, so
    pickle can name it; whatever the module held under that name before is put back."""
    module_name, _, class_name = qualified_class.rpartition(".")
    parts = module_name.split(".")
    added = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    cls = type(class_name, bases, {"__module__": module_name, "__qualname__": class_name})
    module = sys.modules[module_name]
    previous = module.__dict__.get(class_name, _fake_module)
    setattr(module, class_name, cls)
    try:
        yield cls
    finally:
        if previous is _fake_module:
            delattr(module, class_name)
        else:
            setattr(module, class_name, previous)
        for name in added:
            del sys.modules[name]


def _save_lightning_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A `.ckpt` shaped like taming's: Lightning keys, a callback dict keyed by Lightning's class."""
    with _fake_module("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint") as checkpoint_cls:
        torch.save({"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.0.8",
                    "callbacks": {checkpoint_cls: {"best_model_score": torch.tensor(0.5),
                                                   "best_model_path": "/logs/last.ckpt"}},
                    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}],
                    "lr_schedulers": [], "state_dict": state}, path)
    return path


def _write_yaml(path: Path, model_config: dict) -> Path:
    path.write_text(yaml.safe_dump({"model": model_config}))
    return path


def _write_tiny_vqgan(folder: Path, kind: str = "vq", seed: int = 0, n_embed: int = 32) -> tuple[Path, Path]:
    """model.yaml + last.ckpt of a tiny taming VQGAN, as a user has them."""
    config = _write_yaml(folder / "model.yaml", _taming_model_config(kind, n_embed=n_embed))
    checkpoint = _save_lightning_checkpoint(folder / "last.ckpt", _random_taming_state(kind, n_embed, seed=seed))
    return config, checkpoint


def _tiny_clip_config(image_size: int = 32, embed_dim: int = 16) -> dict:
    """A tiny open_clip architecture (ViT + text transformer) in open_clip's model-config layout."""
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": 1, "width": 64, "head_width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}


def _write_tiny_clip(folder: Path, image_size: int = 32, seed: int = 0, name: str = "tiny-clip") -> tuple[Path, Path]:
    """model-config JSON + random weights of a tiny open_clip model, as a user's custom CLIP."""
    import open_clip

    config = folder / f"{name}.json"
    config.write_text(json.dumps({"model_cfg": _tiny_clip_config(image_size)}))
    torch.manual_seed(seed)
    weights = folder / f"{name}.pt"
    torch.save(open_clip.CLIP(**_tiny_clip_config(image_size)).state_dict(), weights)
    return config, weights


@pytest.fixture(scope="session")
def tiny_ddconfig() -> dict:
    """The tiny VQGAN's taming ddconfig (factor 2, attention at the 16×16 token grid of 32 px)."""
    return dict(TINY_DDCONFIG)


@pytest.fixture(scope="session")
def taming_model_config():
    """taming_model_config(kind="vq"|"gumbel", n_embed=32, embed_dim=16, ddconfig=None): a taming model config."""
    return _taming_model_config


@pytest.fixture(scope="session")
def random_taming_state():
    """random_taming_state(kind, n_embed, embed_dim, seed, ddconfig): a seeded state dict with taming's keys."""
    return _random_taming_state


@pytest.fixture(scope="session")
def save_lightning_checkpoint():
    """save_lightning_checkpoint(path, state): a Lightning-pickled `.ckpt` as taming writes it."""
    return _save_lightning_checkpoint


@pytest.fixture(scope="session")
def fake_class():
    """fake_class(qualified_name, bases=()): a context in which a new class is importable under that
    name (modules made up as needed), so that a test can pickle what a foreign package would."""
    return _fake_module


@pytest.fixture(scope="session")
def write_yaml():
    """write_yaml(path, model_config): a taming config YAML (`model:` at the top)."""
    return _write_yaml


@pytest.fixture(scope="session")
def write_tiny_vqgan():
    """write_tiny_vqgan(folder, kind="vq", seed=0, n_embed=32) -> (model.yaml, last.ckpt)."""
    return _write_tiny_vqgan


@pytest.fixture(scope="session")
def write_tiny_clip():
    """write_tiny_clip(folder, image_size=32, seed=0, name="tiny-clip") -> (config JSON, weights)."""
    return _write_tiny_clip


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny VQGAN and CLIP on disk, written once for the session (the presets only point at them)."""
    folder = tmp_path_factory.mktemp("tiny-models")
    vqgan_config, vqgan_checkpoint = _write_tiny_vqgan(folder)
    clip_config, clip_weights = _write_tiny_clip(folder)
    return {"vqgan_config": vqgan_config, "vqgan_checkpoint": vqgan_checkpoint,
            "clip_config": clip_config, "clip_weights": clip_weights}


@pytest.fixture(scope="session")
def make_tiny_preset(tiny_model_files, tmp_path_factory):
    """make_tiny_preset(**overrides) -> a user preset YAML over the tiny models, in a folder of its own
    (its outputs_root is there too); the overrides replace or add top-level preset keys."""
    def make(**overrides) -> Path:
        folder = tmp_path_factory.mktemp("tiny-preset")
        files = tiny_model_files
        preset = {"description": "tiny random models for tests",
                  "vqgan": {"config": str(files["vqgan_config"]), "checkpoint": str(files["vqgan_checkpoint"])},
                  "clip": {"models": [{"name": str(files["clip_config"]), "pretrained": str(files["clip_weights"])}]},
                  "size": [32, 32], "steps": 4, "cutn": 4, "device": "cpu", "quiet": True, "seed": 1,
                  "save_every": 3, "checkpoint_every": 3, "outputs_root": str(folder / "outputs"), **overrides}
        path = folder / "tiny.yaml"
        path.write_text(yaml.safe_dump(preset))
        return path

    return make


@pytest.fixture(scope="session")
def tiny_preset(make_tiny_preset) -> Path:
    """The tiny preset with its own settings: 32×32, 4 steps, cutn 4, seed 1, on the CPU; runs in a second."""
    return make_tiny_preset()


# ---- runs ----------------------------------------------------------------------------------------


@pytest.fixture
def starting_z(monkeypatch) -> list[torch.Tensor]:
    """The latents this test's runs start their optimisation from (what is handed to the optimiser,
    after init and before any step), one per run, in order."""
    import vqclip.generation

    seen = []
    real = vqclip.generation.make_optimizer

    def spy(name, params, *args, **kwargs):
        seen.append(params[0].detach().clone())
        return real(name, params, *args, **kwargs)

    monkeypatch.setattr(vqclip.generation, "make_optimizer", spy)
    return seen


# ---- the shapes world ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shapes_models():
    """The shapes world's VQGAN and CLIP on the CPU, loaded once (runs take them as `models=`)."""
    from vqclip.config import build_config
    from vqclip.loading import load_models

    return load_models(build_config("shapes"), torch.device("cpu"))


@pytest.fixture(scope="session")
def draw_key():
    """draw_key(path, shape, colour, background="white", size=64, x=0.5, y=0.5) -> path of a drawn PNG."""
    from PIL import Image

    from vqclip.shapes.world import Scene, draw

    def draw_key(path: Path, shape: str, colour: str, background: str = "white", size: int = 64,
                 x: float = 0.5, y: float = 0.5) -> Path:
        Image.fromarray(draw(Scene(shape, colour, background, 0.6, x, y), size=size)).save(path)
        return path

    return draw_key


def _moving_circle(count: int, size: int = 64) -> list[torch.Tensor]:
    """A red circle sliding right on white: frames 3 × size × size in [0, 1]."""
    from vqclip.shapes.world import Scene, draw, to_tensor

    return [to_tensor(draw(Scene("circle", "red", "white", 0.5, 0.3 + 0.4 * i / max(count - 1, 1), 0.5), size=size))
            for i in range(count)]


@pytest.fixture(scope="session")
def moving_circle():
    """moving_circle(count, size=64) -> frames of a red circle sliding right on white (3 × size × size)."""
    return _moving_circle


@pytest.fixture(scope="session")
def write_clip():
    """write_clip(path, count, fps=8.0) -> a video (or frame folder) of `moving_circle(count)`."""
    from vqclip.video.frames import write_video

    def write_clip(path: Path, count: int, fps: float = 8.0) -> Path:
        return write_video(path, _moving_circle(count), fps, {"test": "clip"})

    return write_clip


# ---- min-dalle ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def min_dalle_models():
    """min-dalle's `min_dalle.models`, imported without running the package's `__init__`.

    `import min_dalle.models` would run the package's `__init__`, which imports `min_dalle.min_dalle`,
    which calls `torch.set_grad_enabled(False)` and `torch.set_num_threads(os.cpu_count())` for the
    whole process: every later test that needs a gradient would fail. So the package is registered
    as a bare namespace (its `__init__` never runs) and only `min_dalle.models` is imported from it.
    """
    if "min_dalle.models" in sys.modules:
        return sys.modules["min_dalle.models"]
    spec = importlib.util.find_spec("min_dalle")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("min-dalle is not installed (it is in the test extra: pip install '.[test]')")
    if "min_dalle" not in sys.modules:
        package = types.ModuleType("min_dalle")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["min_dalle"] = package
    enabled = torch.is_grad_enabled()
    models = importlib.import_module("min_dalle.models")
    assert "min_dalle.min_dalle" not in sys.modules and torch.is_grad_enabled() == enabled
    return models


# ---- the web UI ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """free_port() -> a loopback TCP port that nothing listens on now."""
    return _free_port


@pytest.fixture
def without_sklearn(monkeypatch):
    """Imports of scikit-learn fail, as where the `digits` extra is not installed."""
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
