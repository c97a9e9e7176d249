"""Training objectives, by name.

An objective is `fn(model, x, *, kl_weight=1.0, generator=None, **hparams) -> LossRecord`.
Its other keyword arguments (and their defaults) are its hyperparameters, which the
registry reads from the signature. `model` is anything with encode/decode/nll (duck-typed
so this file does not import the model). All per-sample terms are sums over pixels and
latents, in nats; `loss` is their batch mean, so reconstruction and KL always live on
the same scale.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LossRecord, Objective, gaussian_kl, reparameterize


def beta_vae(
    model: Any,
    x: Tensor,
    *,
    beta: float = 1.0,
    kl_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> LossRecord:
    """Optimise recon + beta * kl_weight * KL (Higgins et al., 2017), report the true ELBO.

    beta (and the warm-up factor kl_weight) only shape the optimised loss; the recorded
    recon/kl/elbo are the unweighted quantities, so runs with different beta compare on
    the same ELBO. The single-sample reparameterised z gives an unbiased ELBO estimate.
    """
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    recon = model.nll(model.decode(z), x)
    kl = gaussian_kl(mu, logvar)
    loss = (recon + (beta * kl_weight) * kl).mean()
    return LossRecord(loss=loss, recon=recon, kl=kl, elbo=-(recon + kl))


def vae(
    model: Any, x: Tensor, *, kl_weight: float = 1.0, generator: torch.Generator | None = None
) -> LossRecord:
    """The standard VAE (Kingma & Welling, 2014): the negative ELBO, i.e. beta_vae at beta = 1."""
    return beta_vae(model, x, beta=1.0, kl_weight=kl_weight, generator=generator)


def ae(
    model: Any, x: Tensor, *, kl_weight: float = 1.0, generator: torch.Generator | None = None
) -> LossRecord:
    """Deterministic autoencoder baseline: z = mu, loss = recon; no posterior, so no KL/ELBO.

    kl_weight and generator are accepted for a uniform call signature and ignored. The
    encoder's logvar head is left unused (it receives no gradient).
    """
    mu, _ = model.encode(x)
    recon = model.nll(model.decode(mu), x)
    return LossRecord(loss=recon.mean(), recon=recon)


OBJECTIVES: dict[str, Objective] = {
    "ae": ae,
    "vae": vae,
    "beta_vae": beta_vae,
}

# Objectives without an approximate posterior: no KL, no ELBO, no sampling from the prior.
DETERMINISTIC_OBJECTIVES: frozenset[str] = frozenset({"ae"})
