"""Observation models p(x|z): they turn the decoder's raw output into -log p(x|z).

The decoder never squashes its output; the likelihood owns the interpretation (logits
for Bernoulli, a mean for the Gaussian), so the same architecture serves both and the
loss is always a proper negative log-likelihood in nats, summed over every pixel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LOG_2PI


def sum_per_sample(t: Tensor) -> Tensor:
    """Sum over every non-batch dim: (B, ...) -> (B,). Works for any memory format."""
    return t.sum(dim=tuple(range(1, t.dim())))


class Bernoulli(nn.Module):
    """p(x|z) = prod Bernoulli(x; sigmoid(logits)); the decoder output is the logits.

    binary_cross_entropy_with_logits is the numerically stable -[x log p + (1-x) log(1-p)]:
    an exact -log p(x|z) for binary x; for grey levels in [0, 1] it is the customary
    surrogate, not a normalised density (the continuous Bernoulli would be).
    """

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z) per sample, (B,), nats."""
        return sum_per_sample(F.binary_cross_entropy_with_logits(params, x, reduction="none"))

    def mean(self, params: Tensor) -> Tensor:
        """E[x|z] = sigmoid(logits), in [0, 1] (for pictures)."""
        return torch.sigmoid(params)


class Gaussian(nn.Module):
    """p(x|z) = prod N(x; mean, sigma^2) with ONE learned scalar sigma shared by all pixels.

    A learned sigma (the "sigma-VAE" of Rybkin et al., 2021) sets the recon/KL balance by
    maximum likelihood instead of by a hand-tuned weight; its optimum is sqrt(MSE).
    It starts at sigma = 0.1 (log_sigma = log 0.1), roughly the per-pixel error of a
    decent model on [0, 1] images: starting at sigma = 1 would make the reconstruction
    term ~100x too weak against the KL early on and invites posterior collapse before
    Adam has moved log_sigma (it moves about lr per step). log_sigma is clamped at -6
    (sigma ~ 2.5e-3) so a near-perfect reconstruction cannot drive the NLL to -inf.
    Note: this is a density on continuous x, so its nats are not comparable with a
    Bernoulli's probabilities on discrete x.
    """

    MIN_LOG_SIGMA = -6.0

    def __init__(self, init_sigma: float = 0.1) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(init_sigma)))

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """-log N(x; params, sigma^2) summed over pixels, (B,), nats."""
        log_sigma = self.log_sigma.clamp(min=self.MIN_LOG_SIGMA)
        z = (x - params) * torch.exp(-log_sigma)
        return sum_per_sample(0.5 * z.pow(2) + log_sigma + 0.5 * LOG_2PI)

    def mean(self, params: Tensor) -> Tensor:
        """E[x|z] = params, clamped to the image range [0, 1] (for pictures)."""
        return params.clamp(0.0, 1.0)


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
}
