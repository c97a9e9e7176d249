"""A VAE with a learned prior, the VampPrior (Tomczak & Welling 2018), as a vaebench plugin.

The prior is the mixture, with uniform weights, of the encoder's own posteriors at K learned
pseudo-inputs u_k: p(z) = (1/K) sum_k q(z | u_k). Encoder and decoder are vaebench's built-in
MLP (the `mlp` architecture, same widths as beta_sweep's VAE) with its Bernoulli likelihood,
so against that VAE only the prior differs. Pseudo-inputs are images clipped to [0, 1]
(hardtanh, as in the paper), initialised at 0.05 +- 0.01.

The prior is a torch distribution (MixtureSameFamily of diagonal Normals), so the KL has no
closed form: `vaebench.models.kl_divergence` estimates it by Monte Carlo over `kl_samples` draws
of z ~ q(z|x), the first of which is also the reconstruction's sample, drawn example by example
from the trial's generator. The record's ELBO = -recon - kl is an unbiased estimate of the
bound; the importance-weighted bound takes the generic path (posterior, prior, likelihood as
distributions), and sampling draws from the learned prior.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from vaebench.models import ARCHITECTURES, LIKELIHOODS, LossRecord, diagonal_gaussian, kl_divergence, register
from vaebench.models.base import draw


@register("model", "vampprior")
class VampPriorVAE(nn.Module):
    capabilities = frozenset({"elbo", "posterior", "prior", "likelihood", "decoder_distribution", "sample", "codes"})

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, hidden: tuple[int, ...] = (512, 256),
                 components: int = 100, kl_samples: int = 16) -> None:
        super().__init__()
        self.latent_dim, self.kl_samples = latent_dim, kl_samples
        self.encoder, self.decoder = ARCHITECTURES["mlp"](tuple(input_shape), latent_dim, hidden=tuple(hidden))
        self.likelihood = LIKELIHOODS["bernoulli"]()
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *input_shape))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def posterior(self, x: Tensor) -> Distribution:
        return diagonal_gaussian(*self.encode(x))

    def _components(self) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z | u_k) for the K pseudo-inputs, each (K, latent_dim)."""
        return self.encoder(nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0))

    def prior(self) -> Distribution:
        mu, logvar = self._components()
        return MixtureSameFamily(Categorical(logits=torch.zeros(len(mu), device=mu.device)), diagonal_gaussian(mu, logvar))

    def decoder_distribution(self, z: Tensor) -> Distribution:
        params = self.decoder(z.reshape(-1, self.latent_dim))
        return self.likelihood.distribution(params.view(*z.shape[:-1], *params.shape[1:]))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        return self.decoder_distribution(z).log_prob(x)

    def codes(self, x: Tensor) -> Tensor:
        return self.encode(x)[0]

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.likelihood.mean(self.decoder(self.encode(x)[0]))

    forward = reconstruct

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images E[x|z], z from the learned prior: a uniformly chosen component, then its Normal."""
        mu, logvar = self._components()
        k = torch.randint(len(mu), (n,), generator=generator).to(mu.device)
        eps = torch.randn(n, self.latent_dim, generator=generator).to(mu.device)
        return self.likelihood.mean(self.decoder(mu[k] + torch.exp(0.5 * logvar[k]) * eps))

    def loss(self, x: Tensor, kl_weight: float = 1.0, generator: torch.Generator | None = None) -> LossRecord:
        q = self.posterior(x)
        z = draw(q, self.kl_samples, generator)  # (S, B, D); z[0] is the reconstruction's sample
        recon = -self.log_likelihood(x, z[0])
        kl, _ = kl_divergence(q, self.prior(), z=z)
        return LossRecord(loss=(recon + kl_weight * kl).mean(), recon=recon, kl=kl, elbo=-(recon + kl))
