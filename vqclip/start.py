"""Where the optimisation starts: the initial latent z for each `init.mode`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UserError
from .models.checkpoint import load_file
from .outputs import load_image, load_latent


def token_grid(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """(rows, columns) of the latent for an image of size (width, height)."""
    width, height = size
    return height // factor, width // factor


def check_size(size: tuple[int, int], factor: int) -> None:
    """Sizes must be multiples of the VQGAN's factor; name the nearest valid ones."""
    bad = [side for side in size if side % factor or side <= 0]
    if not bad:
        return
    def near(side: int) -> str:
        low = max(factor, side // factor * factor)
        return f"{low}" if low == side + (factor - side % factor) else f"{low} or {low + factor}"
    suggestion = " × ".join(near(side) if side % factor else str(side) for side in size)
    raise UserError(f"size {size[0]}×{size[1]} is not a multiple of the VQGAN's factor {factor}: "
                    f"try {suggestion}")


def needs_prior(config) -> bool:
    """Whether a run's start draws from the prior: init.mode=prior, or a masked region filled by it."""
    from .mask import is_editing

    return config.init.mode == "prior" or (is_editing(config.mask) and config.mask.fill == "prior")


def read_latent(path: str) -> torch.Tensor:
    """A saved z: a tensor file, or a run's state.pt (its "z")."""
    stored = load_file(path)
    if isinstance(stored, dict) and isinstance(stored.get("z"), torch.Tensor):
        return stored["z"]
    if isinstance(stored, torch.Tensor):
        return stored
    raise UserError(f"{path} holds no latent (a tensor, or a state.pt with 'z')")


def initial_z(init, vqgan, size: tuple[int, int], batch: int, generator: torch.Generator,
              device: torch.device, *, prior=None, clip=None, text: str = "",
              picture: torch.Tensor | None = None) -> torch.Tensor:
    """The starting latent, B × C × h × w, for the `init` section of a run config.

    init.mode=prior needs the loaded prior (vqclip.prior.weights.LoadedPrior), the CLIP ensemble
    that ranks its samples, and the text to draw. `picture` (1 × 3 × H × W) replaces the init
    image file for init.mode=image: an outpainting canvas (vqclip/mask.py)."""
    if init.mode not in INIT_MODES:
        raise UserError(f"unknown init.mode={init.mode}: use {', '.join(INIT_MODES)}")
    start = Start(init, vqgan, size, token_grid(size, vqgan.factor), batch, generator, device, prior, clip, text,
                  picture)
    return INIT_MODES[init.mode](start)


@dataclass(frozen=True)
class Start:
    """What every init mode may draw on."""

    init: object  # the config's init section
    vqgan: object
    size: tuple[int, int]  # width, height in pixels
    grid: tuple[int, int]  # rows, columns of the latent
    batch: int
    generator: torch.Generator
    device: torch.device
    prior: object = None
    clip: object = None
    text: str = ""
    picture: torch.Tensor | None = None  # init.mode=image: this instead of reading init.image


def random_z(start: Start) -> torch.Tensor:
    """Uniformly random code indices, looked up in the codebook."""
    generator = start.generator
    tokens = torch.randint(start.vqgan.n_embed, (start.batch, *start.grid), generator=generator,
                           device=generator.device)
    return start.vqgan.tokens_to_z(tokens.to(start.device))


def prior_z(start: Start) -> torch.Tensor:
    """The best of init.prior_candidates prior samples for the text, by CLIP."""
    from .prior.sample import prior_tokens

    if start.prior is None:
        raise UserError("init.mode=prior: no prior was loaded (set init.prior to a prior name or folder)")
    seed = int(torch.randint(2**62, (1,), generator=start.generator, device=start.generator.device))
    tokens = prior_tokens(start.prior, start.vqgan, start.clip, start.text, start.grid,
                          start.init.prior_candidates, start.batch, seed)
    return start.vqgan.tokens_to_z(tokens.to(start.device))


def image_z(start: Start) -> torch.Tensor:
    """The encoded init image, resized to the run's size."""
    if not start.init.image and start.picture is None:
        raise UserError("init.mode=image needs an image: --init-image PATH")
    picture = start.picture if start.picture is not None else load_image(start.init.image, start.size)
    picture = picture.to(start.device)
    with torch.no_grad():
        return start.vqgan.encode(picture).repeat(start.batch, 1, 1, 1)


def noise_z(start: Start) -> torch.Tensor:
    """Encoded noise: random pixels, or a smooth gradient between two random colours at a random angle."""
    (width, height), generator = start.size, start.generator
    if start.init.noise == "pixels":
        picture = torch.rand(start.batch, 3, height, width, generator=generator, device=generator.device)
    else:
        ends = torch.rand(start.batch, 2, 3, 1, 1, generator=generator, device=generator.device)
        angle = torch.rand(start.batch, 1, 1, generator=generator, device=generator.device) * 6.2832
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        ramp = (xs.to(angle.device) * angle.cos() + ys.to(angle.device) * angle.sin()).unsqueeze(1) / 2.83 + 0.5
        picture = ends[:, 0] * (1 - ramp) + ends[:, 1] * ramp
    with torch.no_grad():
        return start.vqgan.encode(picture.to(start.device))


def tokens_z(start: Start) -> torch.Tensor:
    """A saved grid of code indices (init.tokens)."""
    tokens = _saved_batch(start, "tokens", "a saved grid of token indices", start.grid).long()
    if tokens.min() < 0 or tokens.max() >= start.vqgan.n_embed:
        raise UserError(f"init.tokens holds indices outside the codebook (0..{start.vqgan.n_embed - 1})")
    return start.vqgan.tokens_to_z(tokens)


def latent_z(start: Start) -> torch.Tensor:
    """A saved z, or a run's state.pt (init.latent)."""
    return _saved_batch(start, "latent", "a saved z or a run's state.pt", (start.vqgan.embed_dim, *start.grid),
                        read=read_latent).float()


def _saved_batch(start: Start, key: str, what: str, shape: tuple[int, ...], read=load_latent) -> torch.Tensor:
    """The tensor file init.<key> names, as a batch of the run's size: items of `shape`, the first
    one repeated when the file holds another number of them."""
    path = start.init[key]
    if not path:
        raise UserError(f"init.mode={key} needs init.{key}=PATH ({what})")
    saved = read(path).to(start.device)
    saved = saved.reshape(-1, *saved.shape[-len(shape):])
    if tuple(saved.shape[1:]) != shape:
        raise UserError(f"init.{key} holds items of shape {tuple(saved.shape[1:])}, but size "
                        f"{start.size[0]}×{start.size[1]} with this VQGAN needs {shape}")
    return saved if saved.shape[0] == start.batch else saved[:1].expand(start.batch, *shape).clone()


INIT_MODES = {"random": random_z, "image": image_z, "noise": noise_z, "tokens": tokens_z, "latent": latent_z,
              "prior": prior_z}
NOISE_KINDS = ("pixels", "gradient")  # init.noise
ANCHORS = ("z0", "zero")  # init.anchor: pull toward the initial latent, or toward zero as the classic scripts do
