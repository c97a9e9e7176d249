"""The VAE of the common PyTorch tutorial, with the mistakes users copy from it, one switch each.

Registered as whole models, so that `check-model` can be pointed at each mistake:

    python -m vaebench check-model tutorial_vae --plugin examples/tutorial_vae.py          # correct
    python -m vaebench check-model tutorial_vae_logvar_as_std --plugin examples/tutorial_vae.py

Each bug is refused by the check that names it (tests/models/test_tutorial_bugs.py):

- `logvar_as_std`: z = mu + logvar * eps, the log-variance used as a standard deviation, while
  the KL (and the declared posterior) treat it as a log-variance: the record's ELBO is not the
  ELBO of the declared distributions (`elbo_monte_carlo`).
- `pixel_mean_recon`: the reconstruction averaged over pixels, beside a KL summed over latent
  dimensions: not nats per example (`elbo_monte_carlo`).
- `batch_summed_kl`: the KL summed over the batch and added to every example: a term that
  grows with the batch size (`per_example`).
- `tanh_bce`: tanh outputs in [-1, 1] fed to binary cross-entropy as probabilities: torch
  refuses values below 0, so every check fails with that error (`gradients_finite` among them).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent

from vaebench.models import LossRecord, diagonal_gaussian, register, standard_normal

BUGS = ("logvar_as_std", "pixel_mean_recon", "batch_summed_kl", "tanh_bce")


class TutorialVAE(nn.Module):
    """784-128-64 MLP encoder with separate mean and log-variance heads, Bernoulli decoder;
    `bug` plants one of BUGS (None: the correct model)."""

    capabilities = frozenset({"elbo", "posterior", "prior", "likelihood", "decoder_distribution", "sample", "codes"})

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, hidden: int = 128,
                 beta: float = 1.0, bug: str | None = None) -> None:
        super().__init__()
        if bug is not None and bug not in BUGS:
            raise ValueError(f"bug: one of {', '.join(BUGS)}")
        self.shape, self.latent_dim, self.beta, self.bug = tuple(input_shape), latent_dim, beta, bug
        d = math.prod(input_shape)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)

    def posterior(self, x: Tensor) -> Distribution:
        return diagonal_gaussian(*self.encode(x))

    def prior(self) -> Distribution:
        return standard_normal(self.latent_dim, next(self.parameters()))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z), Bernoulli, summed over pixels; z (..., B, D)."""
        logits = self.dec(z)
        target = x.flatten(1).expand_as(logits)
        return -nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def decoder_distribution(self, z: Tensor) -> Distribution:
        """p(x|z) as torch's Bernoulli on the decoder's logits, one event per image."""
        logits = self.dec(z).view(*z.shape[:-1], *self.shape)
        return Independent(Bernoulli(logits=logits, validate_args=False), len(self.shape))

    def codes(self, x: Tensor) -> Tensor:
        return self.encode(x)[0]

    def reconstruct(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.dec(self.encode(x)[0])).view(-1, *self.shape)

    forward = reconstruct

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)
        return torch.sigmoid(self.dec(z)).view(-1, *self.shape)

    def loss(self, x: Tensor, kl_weight: float = 1.0, generator: torch.Generator | None = None) -> LossRecord:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator)
        scale = logvar if self.bug == "logvar_as_std" else torch.exp(0.5 * logvar)
        out = self.dec(mu + scale * eps)
        target = x.flatten(1)
        if self.bug == "tanh_bce":
            recon = nn.functional.binary_cross_entropy(torch.tanh(out), target, reduction="none").sum(1)
        else:
            recon = nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
            recon = recon.mean(1) if self.bug == "pixel_mean_recon" else recon.sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        if self.bug == "batch_summed_kl":
            kl = kl.sum().expand(len(x))
        return LossRecord(loss=(recon + self.beta * kl_weight * kl).mean(), recon=recon, kl=kl, elbo=-(recon + kl))


register("model", "tutorial_vae")(TutorialVAE)
for _bug in BUGS:
    register("model", f"tutorial_vae_{_bug}")(
        lambda input_shape, latent_dim, hidden=128, _bug=_bug: TutorialVAE(input_shape, latent_dim, hidden, bug=_bug))
