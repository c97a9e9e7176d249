"""The model contract: what every model, built-in or brought by the user, fulfils.

A model is an nn.Module with `loss(x, kl_weight=1.0, generator=None) -> LossRecord` and
`reconstruct(x)`, and it declares its other capabilities (CAPABILITIES): a posterior, a prior,
a likelihood, sampling, codes. Built-in models compose an encoder/decoder pair (the
architecture), a likelihood p(x|z) and an objective. Everything above this file (train,
metrics, tracking) speaks only in these terms, so a new model never touches train.py.
The whole contract, with examples: docs/models.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

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


def n_params(model: torch.nn.Module) -> int:
    """Number of trainable parameters, of any model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- capabilities ----------------------------------------------------------------------------
# A model declares what it can do in `capabilities`; every metric, chart and artifact asks for
# the capability it needs, and a model without it gets NaN there with the reason, never a 0.

CAPABILITIES: dict[str, str] = {
    "elbo": "its loss record carries the ELBO terms recon, kl, elbo (nats per example)",
    "posterior": "q(z|x) as a torch distribution: posterior(x); Gaussian ones may also encode(x) -> (mu, logvar)",
    "prior": "p(z) as a torch distribution with log_prob and sample: prior()",
    "likelihood": "log p(x|z) per example: log_likelihood(x, z), z with leading sample dimensions",
    "decoder_distribution": "p(x|z) as a torch distribution over images: decoder_distribution(z), z (..., B, D)",
    "sample": "images in [0, 1] from the prior: sample(n, generator)",
    "codes": "the codes latent metrics read, (B, D): codes(x) (posterior means, quantised codes)",
}
# What an importance-weighted likelihood needs: log p(x|z) + log p(z) - log q(z|x).
IWAE_NEEDS = ("posterior", "prior", "likelihood")


def capabilities(model: object) -> frozenset[str]:
    """The capabilities `model` declares (an unknown name is an error: a typo would silently
    turn a metric off)."""
    declared = frozenset(getattr(model, "capabilities", ()))
    unknown = declared - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {', '.join(CAPABILITIES)}")
    return declared


def lacks(model: object, *needed: str) -> str | None:
    """None when `model` has every capability in `needed`, else the reason a metric that needs
    them is skipped, e.g. `skipped: no posterior`."""
    missing = [c for c in needed if c not in capabilities(model)]
    return f"skipped: no {', '.join(missing)}" if missing else None


def standard_normal(latent_dim: int, like: Tensor | None = None) -> Distribution:
    """N(0, I) over a `latent_dim` vector: the default prior."""
    zeros = torch.zeros(latent_dim) if like is None else torch.zeros(latent_dim, dtype=like.dtype, device=like.device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


def diagonal_gaussian(mu: Tensor, logvar: Tensor) -> Distribution:
    """q(z|x) = N(mu, diag exp(logvar)) as a torch distribution over the last dimension."""
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def draw(q: Distribution, samples: int, generator: torch.Generator | None = None) -> Tensor:
    """(samples, *batch, *event) draws z ~ q, reparameterised where q allows. With a generator, a
    diagonal Gaussian draws its noise example by example (batch-major), so an example's draws do
    not depend on the batch it sits in (check-model's per_example); other distributions draw from
    torch's global generator (their `rsample` takes none)."""
    base = q.base_dist if isinstance(q, Independent) else q
    if generator is None or not isinstance(base, Normal):
        return q.rsample((samples,)) if q.has_rsample else q.sample((samples,))
    loc = base.loc
    eps = torch.randn((*q.batch_shape, samples, *q.event_shape), generator=generator, dtype=loc.dtype, device=loc.device)
    return loc + base.scale * eps.movedim(len(q.batch_shape), 0)


def kl_divergence(q: Distribution, p: Distribution, samples: int = 64, generator: torch.Generator | None = None,
                  z: Tensor | None = None) -> tuple[Tensor, str]:
    """KL(q || p) per example and how it was computed: analytic where torch knows the closed
    form, else a Monte Carlo mean of log q(z) - log p(z) over `samples` draws of z ~ q (`draw`,
    from `generator`), or over the draws `z` given (S, *batch, D), e.g. those a model's
    reconstruction used; the method says how many."""
    try:
        return torch.distributions.kl_divergence(q, p), "analytic"
    except NotImplementedError:
        z = draw(q, samples, generator) if z is None else z
        return (q.log_prob(z) - p.log_prob(z)).mean(0), f"monte carlo, {len(z)} samples"
