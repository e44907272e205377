"""Where the optimisation starts: the initial latent z for each `init.mode`."""

from __future__ import annotations

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


def read_latent(path: str) -> torch.Tensor:
    """A saved z: a tensor file, or a run's state.pt (its "z")."""
    stored = load_file(path)
    if isinstance(stored, dict) and isinstance(stored.get("z"), torch.Tensor):
        return stored["z"]
    if isinstance(stored, torch.Tensor):
        return stored
    raise UserError(f"{path} holds no latent (a tensor, or a state.pt with 'z')")


def initial_z(init, vqgan, size: tuple[int, int], batch: int, generator: torch.Generator,
              device: torch.device, *, prior=None, clip=None, text: str = "") -> torch.Tensor:
    """The starting latent, B × C × h × w, for the `init` section of a run config.

    init.mode=prior needs the loaded prior (vqclip.prior.weights.LoadedPrior), the CLIP ensemble
    that ranks its samples, and the text to draw."""
    rows, columns = token_grid(size, vqgan.factor)
    mode = init.mode
    if mode == "prior":
        from .prior.sample import prior_tokens

        if prior is None:
            raise UserError("init.mode=prior: no prior was loaded (set init.prior to a prior name or folder)")
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        tokens = prior_tokens(prior, vqgan, clip, text, (rows, columns), init.prior_candidates, batch, seed)
        return vqgan.tokens_to_z(tokens.to(device))
    if mode == "random":
        tokens = torch.randint(vqgan.n_embed, (batch, rows, columns), generator=generator, device=generator.device)
        return vqgan.tokens_to_z(tokens.to(device))
    if mode == "image":
        if not init.image:
            raise UserError("init.mode=image needs an image: --init-image PATH")
        picture = load_image(init.image, size).to(device)
        with torch.no_grad():
            return vqgan.encode(picture).repeat(batch, 1, 1, 1)
    if mode == "noise":
        width, height = size
        if init.noise == "pixels":
            picture = torch.rand(batch, 3, height, width, generator=generator, device=generator.device)
        else:  # a smooth random colour gradient between two random colours, at a random angle
            ends = torch.rand(batch, 2, 3, 1, 1, generator=generator, device=generator.device)
            angle = torch.rand(batch, 1, 1, generator=generator, device=generator.device) * 6.2832
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
            ramp = (xs.to(angle.device) * angle.cos() + ys.to(angle.device) * angle.sin()).unsqueeze(1) / 2.83 + 0.5
            picture = ends[:, 0] * (1 - ramp) + ends[:, 1] * ramp
        with torch.no_grad():
            return vqgan.encode(picture.to(device))
    if mode == "tokens":
        if not init.tokens:
            raise UserError("init.mode=tokens needs init.tokens=PATH (a saved grid of token indices)")
        tokens = load_latent(init.tokens).long().to(device)
        tokens = tokens.reshape(-1, *tokens.shape[-2:])
        if tuple(tokens.shape[-2:]) != (rows, columns):
            raise UserError(f"init.tokens holds a {tokens.shape[-2]}×{tokens.shape[-1]} grid, but size "
                            f"{size[0]}×{size[1]} needs {rows}×{columns}")
        if tokens.min() < 0 or tokens.max() >= vqgan.n_embed:
            raise UserError(f"init.tokens holds indices outside the codebook (0..{vqgan.n_embed - 1})")
        return vqgan.tokens_to_z(tokens).expand(batch, -1, -1, -1).clone()
    if mode == "latent":
        if not init.latent:
            raise UserError("init.mode=latent needs init.latent=PATH (a saved z or a run's state.pt)")
        z = read_latent(init.latent).float().to(device)
        z = z.reshape(-1, *z.shape[-3:])
        if z.shape[1:] != (vqgan.embed_dim, rows, columns):
            raise UserError(f"init.latent has shape {tuple(z.shape[1:])}, but this VQGAN at size "
                            f"{size[0]}×{size[1]} needs {(vqgan.embed_dim, rows, columns)}")
        return z[:1].expand(batch, -1, -1, -1).clone() if z.shape[0] != batch else z
    raise UserError(f"unknown init.mode={mode}: use random, image, noise, tokens, latent or prior")
