"""VAEModel: the one class that composes an architecture, a likelihood and an objective.

There is no model hierarchy: a new architecture, likelihood or objective is a registry
entry, and this class only wires them together and exposes the contract in base.py.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .base import CAPABILITIES, LossRecord, diagonal_gaussian, n_params, standard_normal
from .objectives import OBJECTIVE_CAPABILITIES, OBJECTIVES


class VAEModel(nn.Module):
    """encoder q(z|x), decoder + likelihood p(x|z), prior N(0, I), trained by `objective`;
    the built-in form of the model contract (models/base.py)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        *,
        arch: str,
        objective: str,
        likelihood_name: str,
        latent_dim: int,
        input_shape: tuple[int, int, int],
        arch_hparams: dict[str, Any] | None = None,
        objective_hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.arch = arch
        self.objective = objective
        self.likelihood_name = likelihood_name
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        self.arch_hparams = dict(arch_hparams or {})
        self.objective_hparams = dict(objective_hparams or {})

    # The contract --------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> (mu, logvar) of q(z|x), each (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """z (B, latent_dim) -> raw parameters of p(x|z), shaped like x."""
        return self.decoder(z)

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z) per sample, (B,), nats."""
        return self.likelihood.nll(params, x)

    def loss(
        self, x: Tensor, kl_weight: float = 1.0, generator: torch.Generator | None = None
    ) -> LossRecord:
        """The objective's LossRecord for batch x; kl_weight is the KL warm-up factor."""
        return OBJECTIVES[self.objective](
            self, x, kl_weight=kl_weight, generator=generator, **self.objective_hparams
        )

    def posterior(self, x: Tensor) -> Distribution:
        """q(z|x) = N(mu, diag exp(logvar)) as a torch distribution."""
        return diagonal_gaussian(*self.encode(x))

    def prior(self) -> Distribution:
        """p(z) = N(0, I)."""
        return standard_normal(self.latent_dim, next(self.parameters()))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) for z (..., B, latent_dim): (..., B), summed over pixels, nats."""
        lead = z.shape[:-2]
        flat = z.reshape(-1, z.shape[-1])
        xs = x.expand(*lead, *x.shape).reshape(-1, *x.shape[1:])
        return -self.nll(self.decode(flat), xs).view(*lead, x.shape[0])

    def decoder_distribution(self, z: Tensor) -> Distribution:
        """p(x|z) for z (..., B, latent_dim) as the likelihood's torch distribution over images."""
        params = self.decode(z.reshape(-1, z.shape[-1]))
        return self.likelihood.distribution(params.view(*z.shape[:-1], *params.shape[1:]))

    def codes(self, x: Tensor) -> Tensor:
        """The posterior means mu(x): the codes the latent metrics read."""
        return self.encode(x)[0]

    # Pictures ------------------------------------------------------------------------
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z = posterior mean], in [0, 1]."""
        mu, _ = self.encode(x)
        return self.likelihood.mean(self.decode(mu))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images E[x|z], z ~ N(0, I), in [0, 1]. Meaningless for a deterministic `ae`."""
        ref = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.likelihood.mean(self.decode(z))

    def forward(self, x: Tensor) -> Tensor:
        """reconstruct(x): gives the module a tensor -> tensor forward for export/tracing."""
        return self.reconstruct(x)

    # Facts ---------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[str]:
        """What this model can do: everything, unless its objective says less; a decoder
        distribution where its likelihood has a torch form (the discretized logistic has none)."""
        can = OBJECTIVE_CAPABILITIES.get(self.objective, frozenset(CAPABILITIES))
        return can if hasattr(self.likelihood, "distribution") else can - {"decoder_distribution"}

    @property
    def is_variational(self) -> bool:
        """True when the objective has a posterior (and hence KL, ELBO and prior samples)."""
        return "elbo" in self.capabilities

    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        return n_params(self)

    @property
    def config(self) -> dict[str, Any]:
        """Everything build() needs to rebuild this model: `build(**model.config)`."""
        return {
            "arch": self.arch,
            "objective": self.objective,
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood_name,
            "input_shape": self.input_shape,
            **self.arch_hparams,
            **self.objective_hparams,
        }

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch}, objective={self.objective}, likelihood={self.likelihood_name}, "
            f"latent_dim={self.latent_dim}, input_shape={self.input_shape}"
        )
