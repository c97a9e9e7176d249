"""Pictures of one trained model: PNG files made with torchvision's image grids."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from vaebench.models import VAEModel

MIN_SIDE = 28  # small images (8x8 digits) are upscaled so a grid is readable


def _readable(images: torch.Tensor) -> torch.Tensor:
    side = images.shape[-1]
    if side >= MIN_SIDE:
        return images
    return F.interpolate(images, scale_factor=-(-MIN_SIDE // side), mode="nearest")


@torch.no_grad()
def reconstructions(model: VAEModel, x: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Originals in the first row, their reconstructions (posterior mean) below."""
    model.eval()
    x = x[:n].to(next(model.parameters()).device)
    grid = torch.cat([x, model.reconstruct(x)]).cpu()
    save_image(_readable(grid), path, nrow=x.shape[0], padding=2, pad_value=0.5)
    return path


@torch.no_grad()
def samples(model: VAEModel, path: Path, n: int = 64, seed: int = 0) -> Path:
    """Decoded draws from the prior N(0, I), as the decoder's mean image."""
    model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    save_image(_readable(model.sample(n, generator=gen).cpu()), path, nrow=8, padding=2, pad_value=0.5)
    return path
