"""Image grids of one trained model: one PNG per call, its Path returned, drawn with
torchvision's `save_image` (no matplotlib): reconstructions, prior samples, latent traversals,
and image sets side by side (a trial's samples from each sampler).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from vaebench.metrics import inference, model_device
from vaebench.models import VAEModel

MIN_SIDE = 28  # small images (8x8 digits) are upscaled so a grid is readable
PAD = 2  # pixels between the tiles of an image grid


def _readable(images: torch.Tensor) -> torch.Tensor:
    side = images.shape[-1]
    if side >= MIN_SIDE:
        return images
    return F.interpolate(images, scale_factor=-(-MIN_SIDE // side), mode="nearest")


def _save_grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    """Tiles `images` (B, C, H, W) in [0, 1], `nrow` per row, on a grey background."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(_readable(images.cpu()), path, nrow=nrow, padding=PAD, pad_value=0.5)
    return path


@torch.no_grad()
def reconstructions(model: VAEModel, x: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Originals in the first row, their reconstructions (posterior mean) below."""
    model.eval()
    x = x[:n].to(next(model.parameters()).device)
    return _save_grid(torch.cat([x, model.reconstruct(x)]), path, nrow=x.shape[0])


@torch.no_grad()
def samples(model: VAEModel, path: Path, n: int = 64, seed: int = 0) -> Path:
    """Decoded draws from the prior N(0, I), as the decoder's mean image."""
    model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return _save_grid(model.sample(n, generator=gen), path, nrow=8)


def side_by_side(grids: list[torch.Tensor], path: Path, nrow: int = 8, gap: int = 8) -> Path:
    """Image sets (B, C, H, W) in [0, 1], each tiled `nrow` per row, next to each other with a
    white gap: e.g. one trial's samples from each sampler."""
    tiles = [make_grid(_readable(g.cpu()), nrow=nrow, padding=PAD, pad_value=0.5) for g in grids]
    height = max(t.shape[1] for t in tiles)
    tiles = [F.pad(t, (0, 0, 0, height - t.shape[1]), value=1.0) for t in tiles]
    spacer = torch.ones(tiles[0].shape[0], height, gap)
    row = torch.cat([part for t in tiles for part in (t, spacer)][:-1], dim=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(row, path)
    return path


def traversals(model: VAEModel, x0: torch.Tensor, path: Path, span: float = 3.0, steps: int = 11) -> Path:
    """What each latent dimension controls: row d decodes x0's posterior mean with z_d swept.

    Row d (top row = dimension 0) holds the mean images for z_d = linspace(-span, span,
    steps), every other coordinate fixed at mu(x0). The sweep is in absolute units, so
    ±3 covers the N(0, I) prior; a collapsed dimension gives a row of identical images.
    For a deterministic `ae` the code is not prior-scaled and the span is arbitrary.
    """
    x0 = x0 if x0.dim() == len(model.input_shape) + 1 else x0.unsqueeze(0)
    dims = model.latent_dim
    with inference(model):
        mu, _ = model.encode(x0[:1].to(model_device(model)))
        z = mu.repeat(dims * steps, 1)
        sweep = torch.linspace(-span, span, steps, device=z.device, dtype=z.dtype)
        for d in range(dims):
            z[d * steps : (d + 1) * steps, d] = sweep
        images = model.likelihood.mean(model.decode(z))
    return _save_grid(images, path, nrow=steps)
