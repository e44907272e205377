"""The networks a run needs, loaded once from what a config names, and reusable across runs.

Below the jobs that use them (generation, video, batch, the web UI, the evals) and above the model
formats (vqclip.models) and the prior's weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from .config import to_dict
from .machine.device import pick_device
from .machine.precision import compute_copy
from .paths import check_paths
from .start import needs_prior


@dataclass
class Models:
    """The loaded networks a run needs; reuse them across runs that share them."""

    vqgan: torch.nn.Module
    clip: object  # vqclip.models.clip.ClipEnsemble
    device: torch.device
    prior: object = None  # vqclip.prior.weights.LoadedPrior, loaded only for init.mode=prior
    copies: dict = field(default_factory=dict, repr=False, compare=False)  # dtype -> these models in it

    def in_precision(self, dtype: torch.dtype) -> Models:
        """These networks computing in `dtype`: a copy made once and kept (fp32 is `self`)."""
        if dtype == torch.float32:
            return self
        if dtype not in self.copies:
            constants = tuple(f"members.{i}.{name}" for i in range(len(self.clip.members)) for name in ("mean", "std"))
            self.copies[dtype] = Models(compute_copy(self.vqgan, dtype, keep_fp32=self.vqgan.keep_fp32),
                                        compute_copy(self.clip, dtype, keep_fp32=constants), self.device)
        return self.copies[dtype]


def load_models(config: DictConfig, device: torch.device | None = None) -> Models:
    """The VQGAN, the CLIP ensemble and (init.mode=prior, mask.fill=prior) the prior a config names.

    Every path the config names is checked first (vqclip.paths), so that a typo costs no loading;
    the files init.mode starts from are left to `run`, which knows whether the run is resumed."""
    from .models.clip import load_clip_ensemble
    from .models.registry import load_vqgan_from_config, resolve_clip

    check_paths(config, starting=False)
    device = device or pick_device(config.device)
    plain = to_dict(config)
    vqgan = load_vqgan_from_config(plain["vqgan"], device, progress=not config.quiet)
    clip = load_clip_ensemble([resolve_clip(spec) for spec in plain["clip"]["models"]], device)
    prior = None
    if needs_prior(config):
        from .prior.weights import load_prior

        prior = load_prior(config.init.prior, device, progress=not config.quiet)
    return Models(vqgan, clip, device, prior=prior)


def models_key(config: DictConfig) -> str:
    """What `load_models` reads from a config: runs whose keys agree can share loaded models."""
    plain = to_dict(config)
    prior = plain["init"]["prior"] if needs_prior(config) else None
    return json.dumps({"vqgan": plain["vqgan"], "clip": plain["clip"], "device": plain["device"], "prior": prior},
                      sort_keys=True)
