"""The model contract every architecture x objective pair fulfils.

A model is an encoder/decoder pair (the architecture), a likelihood p(x|z) and an
objective. Everything above this file (train, metrics, tracking) speaks only in these
terms, so a new objective or architecture never touches train.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


@dataclass
class LossRecord:
    """What every objective returns for a batch.

    `loss` is the scalar that is optimised (batch mean). The others are per-sample
    tensors of shape (B,), in nats: `recon` = -log p(x|z), `kl` = KL(q(z|x) || p(z)),
    `elbo` = -(recon + kl). Objectives without a posterior (the plain autoencoder) leave
    `kl` and `elbo` as None: they are absent, not zero.
    """

    loss: Tensor
    recon: Tensor
    kl: Tensor | None = None
    elbo: Tensor | None = None


class Encoder(Protocol):
    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> (mu, logvar), each (B, latent_dim), from separate heads."""


class Decoder(Protocol):
    def __call__(self, z: Tensor) -> Tensor:
        """z (B, latent_dim) -> distribution parameters shaped like x (B, C, H, W)."""


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I); differentiable in mu and logvar."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic KL(N(mu, diag exp(logvar)) || N(0, I)) per sample, summed over latents (nats)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """Same as gaussian_kl but kept per latent dimension: (B, latent_dim)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


Objective = Callable[..., LossRecord]
