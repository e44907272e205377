"""Writers of tiny random-weight model files in the layouts real users have (for the tests).

Real taming checkpoints are Lightning pickles that name Lightning classes; Net2Net checkpoints
hold the VQGAN under `first_stage_model.`; min-dalle ships a bare decoder state dict in fp16.
These helpers write the same layouts into a test's tmp_path, with small architectures.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import torch
import yaml

from vqclip.models.vqgan import build_vqgan, taming_state_dict

TINY_DDCONFIG = dict(double_z=False, z_channels=16, resolution=32, in_channels=3, out_ch=3, ch=32,
                     ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], dropout=0.0)

# A real taming lossconfig: never instantiated by vqclip (it would need VGG weights).
LOSSCONFIG = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
              "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 250001,
                         "disc_weight": 0.8, "codebook_weight": 1.0}}


def taming_model_config(kind: str = "vq", n_embed: int = 32, embed_dim: int = 16, ddconfig=None) -> dict:
    params = {"embed_dim": embed_dim, "n_embed": n_embed, "ddconfig": dict(ddconfig or TINY_DDCONFIG),
              "lossconfig": LOSSCONFIG}
    if kind == "gumbel":
        params.update(kl_weight=1e-8, temperature_scheduler_config={
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {"warm_up_steps": 0, "max_decay_steps": 1000001, "lr_start": 0.9,
                       "lr_max": 0.9, "lr_min": 1.0e-06}})
        return {"target": "taming.models.vqgan.GumbelVQ", "params": params}
    return {"target": "taming.models.vqgan.VQModel", "params": params}


def random_taming_state(kind: str = "vq", n_embed: int = 32, embed_dim: int = 16, seed: int = 0,
                        ddconfig=None) -> dict[str, torch.Tensor]:
    """A state dict with taming's key names (`quantize.*`, plus `loss.*` training keys)."""
    torch.manual_seed(seed)
    spec = {"kind": kind, "ddconfig": dict(ddconfig or TINY_DDCONFIG), "n_embed": n_embed,
            "embed_dim": embed_dim}
    model = build_vqgan(spec)
    state = {k: v.clone() for k, v in taming_state_dict(model).items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)
    return state


@contextlib.contextmanager
def fake_module(qualified_class: str):
    """A class importable as `qualified_class` while the block runs, so pickle can name it."""
    module_name, _, class_name = qualified_class.rpartition(".")
    parts = module_name.split(".")
    added = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    cls = type(class_name, (), {"__module__": module_name})
    setattr(sys.modules[module_name], class_name, cls)
    try:
        yield cls
    finally:
        for name in added:
            del sys.modules[name]


def save_lightning_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A `.ckpt` shaped like taming's: Lightning keys, a callback dict keyed by Lightning's class."""
    with fake_module("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint") as checkpoint_cls:
        torch.save({"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.0.8",
                    "callbacks": {checkpoint_cls: {"best_model_score": torch.tensor(0.5),
                                                   "best_model_path": "/logs/last.ckpt"}},
                    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}],
                    "lr_schedulers": [], "state_dict": state}, path)
    return path


def write_yaml(path: Path, model_config: dict) -> Path:
    path.write_text(yaml.safe_dump({"model": model_config}))
    return path


def write_tiny_vqgan(folder: Path, kind: str = "vq", seed: int = 0, n_embed: int = 32) -> tuple[Path, Path]:
    """model.yaml + last.ckpt of a tiny taming VQGAN, as a user has them."""
    config = write_yaml(folder / "model.yaml", taming_model_config(kind, n_embed=n_embed))
    checkpoint = save_lightning_checkpoint(folder / "last.ckpt", random_taming_state(kind, n_embed, seed=seed))
    return config, checkpoint


def tiny_clip_config(image_size: int = 32, embed_dim: int = 16) -> dict:
    """A tiny open_clip architecture (ViT + text transformer) in open_clip's model-config layout."""
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": 1, "width": 64, "head_width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}


def write_tiny_clip(folder: Path, image_size: int = 32, seed: int = 0, name: str = "tiny-clip") -> tuple[Path, Path]:
    """model-config JSON + random weights of a tiny open_clip model, as a user's custom CLIP."""
    import json

    import open_clip

    config = folder / f"{name}.json"
    config.write_text(json.dumps({"model_cfg": tiny_clip_config(image_size)}))
    torch.manual_seed(seed)
    weights = folder / f"{name}.pt"
    torch.save(open_clip.CLIP(**tiny_clip_config(image_size)).state_dict(), weights)
    return config, weights


def write_tiny_preset(folder: Path, **overrides) -> Path:
    """A user preset YAML that points at a tiny VQGAN and CLIP in `folder`: runs in a second."""
    vqgan_config, vqgan_checkpoint = write_tiny_vqgan(folder)
    clip_config, clip_weights = write_tiny_clip(folder)
    preset = {"description": "tiny random models for tests",
              "vqgan": {"config": str(vqgan_config), "checkpoint": str(vqgan_checkpoint)},
              "clip": {"models": [{"name": str(clip_config), "pretrained": str(clip_weights)}]},
              "size": [32, 32], "steps": 4, "cutn": 4, "device": "cpu", "quiet": True, "seed": 1,
              "save_every": 3, "checkpoint_every": 3, "outputs_root": str(folder / "outputs"), **overrides}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path
