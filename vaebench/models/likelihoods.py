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
from torch.distributions import Distribution, Independent, Normal
from torch.distributions import Bernoulli as TorchBernoulli

from .base import LOG_2PI

IMAGE_DIMS = 3  # an image (C, H, W) is one event of p(x|z)


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

    def nll_samples(self, params: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z_s) of S decoded samples per example: params (B, S, ...), x (B, ...) ->
        (B, S). softplus(l) - x*l equals binary_cross_entropy_with_logits (to rounding) and
        needs no S copies of x: the importance-weighted estimate with k = 5,000 runs ~3x faster."""
        logits = params.flatten(2)
        return F.softplus(logits).sum(-1) - torch.bmm(logits, x.flatten(1).unsqueeze(-1).to(logits.dtype)).squeeze(-1)

    def mean(self, params: Tensor) -> Tensor:
        """E[x|z] = sigmoid(logits), in [0, 1] (for pictures)."""
        return torch.sigmoid(params)

    def distribution(self, params: Tensor) -> Distribution:
        """p(x|z) as torch's own Bernoulli on the logits: check-model's independent reference for
        `nll` (unvalidated, so grey levels in [0, 1] get the same surrogate as `nll`)."""
        return Independent(TorchBernoulli(logits=params, validate_args=False), IMAGE_DIMS)


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

    def distribution(self, params: Tensor) -> Distribution:
        """p(x|z) as torch's own Normal, normaliser included: check-model's reference for `nll`."""
        return Independent(Normal(params, self.log_sigma.clamp(min=self.MIN_LOG_SIGMA).exp()), IMAGE_DIMS)


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
}


class DiscretizedLogistic(nn.Module):
    """p(x|z) for 8-bit images: each pixel's 256 levels k/255 get the mass of a logistic
    (mean = the decoder output, one learned log-scale shared by all pixels) over the bin
    [k/255 - 1/510, k/255 + 1/510], the edge bins reaching to -inf and +inf, so the pmf sums
    to 1 over the 256 levels (Salimans et al. 2017, PixelCNN++; Kingma et al. 2016, IAF,
    with one logistic instead of a mixture).

    The NLL is in nats per image, a proper discrete likelihood (bits/dim = nll / (D ln 2)),
    comparable with the literature on CIFAR-10, unlike the Gaussian's density. x must be
    k/255 (what the torchvision datasets give); other values are scored as the nearest
    bin's centre would be only approximately. As in PixelCNN++, a bin whose mass underflows
    float32 is scored by density x bin width, and log_scale is clamped at -7.
    """

    BINS = 256
    MIN_LOG_SCALE = -7.0

    def __init__(self, init_scale: float = 0.05) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def log_pmf(self, params: Tensor, x: Tensor) -> Tensor:
        """log P(x | mean = params) per pixel, same shape as x."""
        half_bin = 0.5 / (self.BINS - 1)
        log_scale = self.log_scale.clamp(min=self.MIN_LOG_SCALE)
        inv_scale = torch.exp(-log_scale)
        centred = x - params
        upper = inv_scale * (centred + half_bin)
        lower = inv_scale * (centred - half_bin)
        log_cdf_upper = F.logsigmoid(upper)  # the first bin: P(X <= upper edge)
        log_sf_lower = F.logsigmoid(-lower)  # the last bin: P(X > lower edge)
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        mid = inv_scale * centred
        log_density_mid = mid - log_scale - 2.0 * F.softplus(mid)  # logistic log-pdf at the centre
        log_mass = torch.where(
            mass > 1e-5,
            torch.log(mass.clamp(min=1e-12)),
            log_density_mid + math.log(2 * half_bin),
        )
        return torch.where(
            x < half_bin, log_cdf_upper, torch.where(x > 1.0 - half_bin, log_sf_lower, log_mass)
        )

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """-log P(x|z) summed over pixels, (B,), nats."""
        return sum_per_sample(-self.log_pmf(params, x))

    def mean(self, params: Tensor) -> Tensor:
        """The logistic's mean, clamped to the image range [0, 1] (for pictures)."""
        return params.clamp(0.0, 1.0)


LIKELIHOODS["discretized_logistic"] = DiscretizedLogistic
