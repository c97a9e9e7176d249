"""Likelihood scores that speak only the model contract (models/base.py): the codes, the
per-example ELBO terms, the importance-weighted log-likelihood, the KL per latent dimension.
Nats per example, every estimate seeded."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Normal

from vaebench.models.base import IWAE_NEEDS, gaussian_kl_per_dim, lacks
from vaebench.models.model import VAEModel

# --- model-level helpers (the model contract only) ----------------------------------------


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """eval mode and no grad for the block, then the caller's train/eval mode again."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameter-free model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def posterior_means(model: nn.Module, x: Tensor, batch_size: int = 1024) -> np.ndarray:
    """The model's codes, (N, D): what the latent scores are computed on. `model.codes(x)`
    (a quantiser's codes for a VQ-VAE), else the posterior means mu(x) from `encode`."""
    reason = lacks(model, "codes")
    if reason:
        raise ValueError(f"codes: {reason}")
    device = model_device(model)
    codes = getattr(model, "codes", None) or (lambda xb: model.encode(xb)[0])
    with inference(model):
        means = [codes(xb.to(device)).reshape(len(xb), -1).cpu() for xb in x.split(batch_size)]
    return torch.cat(means).numpy()


def elbo_terms(model: nn.Module, x: Tensor, batch_size: int = 1024, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-example `recon`, and `kl`, `elbo` where the model has a posterior (absent, not
    zero, otherwise), from the model's own loss with one seeded sample per example.

    Deterministic for a given (seed, batch_size): the generator is consumed batch by batch.
    """
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    parts: dict[str, list[Tensor]] = {}
    with inference(model):
        for xb in x.split(batch_size):
            record = model.loss(xb.to(device), generator=generator)
            for name in ("recon", "kl", "elbo"):
                value = getattr(record, name)
                if value is not None:
                    parts.setdefault(name, []).append(value.detach().double().cpu())
    return {name: torch.cat(values).numpy() for name, values in parts.items()}


def gaussian_standard(model: nn.Module) -> bool:
    """A Gaussian encoder (encode -> mu, logvar), decode + nll, and the default N(0, I) prior
    (no prior() of its own): the contract's default form, scored with per-example noise."""
    own_prior = hasattr(model, "prior") and not isinstance(model, VAEModel)
    return all(hasattr(model, name) for name in ("encode", "decode", "nll")) and not own_prior


def _example_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _example_noise(seed: int, first: int, k: int, mu: Tensor) -> Tensor:
    """eps (len(mu), k, latent) for examples first, first+1, ..., each from its own seeded
    CPU generator, so the estimate does not depend on batch size or chunking, and the noise
    is the same on every device."""
    shape = (k, mu.shape[1])
    eps = [
        torch.randn(shape, generator=torch.Generator().manual_seed(_example_seed(seed, i)), dtype=mu.dtype)
        for i in range(first, first + len(mu))
    ]
    return torch.stack(eps).to(mu.device)


def _nll_samples(model: nn.Module, params: Tensor, x: Tensor) -> Tensor:
    """-log p(x|z) for params (b, s, ...) of s samples per example of x (b, ...): the
    likelihood's own broadcasting version where it has one, else model.nll on s copies."""
    fast = getattr(getattr(model, "likelihood", None), "nll_samples", None)
    if fast is not None:
        return fast(params, x)
    b, s = params.shape[:2]
    x_rep = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
    return model.nll(params.flatten(0, 1), x_rep).view(b, s)


def _log_weights(model: nn.Module, x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps; (b, s) float64."""
    b, s, d = eps.shape
    std = torch.exp(0.5 * logvar).unsqueeze(1)
    z = mu.unsqueeze(1) + std * eps
    params = model.decode(z.reshape(b * s, d))
    log_px_z = -_nll_samples(model, params.view(b, s, *params.shape[1:]), x).double()
    z64 = z.double()
    log_pz = Normal(0.0, 1.0).log_prob(z64).sum(-1)
    log_qz = Normal(mu.double().unsqueeze(1), std.double()).log_prob(z64).sum(-1)
    return log_px_z + log_pz - log_qz


def _iwae_batch(model: nn.Module, x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, sample_chunk: int) -> Tensor:
    """log mean_i w_i for one batch, summing weights chunk by chunk in log space."""
    total = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    for chunk in eps.split(sample_chunk, dim=1):
        total = torch.logaddexp(total, torch.logsumexp(_log_weights(model, x, mu, logvar, chunk), dim=1))
    return (total - math.log(eps.shape[1])).cpu()


IWAE_NOISE_SAMPLES = 1 << 18  # (example, sample) pairs of noise held at once: 52 MB at 50 latents
IWAE_DECODE_ROWS = 1 << 14  # samples decoded per call


def iwae_log_likelihood(
    model: nn.Module, x: Tensor, k: int, batch_size: int = 256, seed: int = 0, sample_chunk: int = 64
) -> Tensor:
    """Importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per
    example (N,) float64. Tighter than the ELBO as k grows, equal to it in expectation at
    k=1, exact at any k when q is the true posterior.

    Memory is bounded whatever k is (k = 5,000 is the literature's test protocol): at most
    IWAE_NOISE_SAMPLES noise vectors and IWAE_DECODE_ROWS decoded samples are held at once,
    so large k means fewer examples per batch and more samples per decode call. Noise is
    drawn per example, so batch_size and sample_chunk do not change the result.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    reason = lacks(model, *IWAE_NEEDS)
    if reason:
        raise ValueError(f"iwae_log_likelihood: {reason}")
    if not gaussian_standard(model):
        return _iwae_from_distributions(model, x, k, batch_size, seed, sample_chunk)
    device = model_device(model)
    batch_size = max(1, min(batch_size, IWAE_NOISE_SAMPLES // k))
    sample_chunk = max(sample_chunk, IWAE_DECODE_ROWS // batch_size)
    estimates = []
    with inference(model):
        for first in range(0, len(x), batch_size):
            xb = x[first : first + batch_size].to(device)
            mu, logvar = model.encode(xb)
            eps = _example_noise(seed, first, k, mu)
            estimates.append(_iwae_batch(model, xb, mu, logvar, eps, sample_chunk))
    return torch.cat(estimates)


def _iwae_from_distributions(model: nn.Module, x: Tensor, k: int, batch_size: int, seed: int,
                             sample_chunk: int) -> Tensor:
    """The same bound for any model that declares posterior(x), prior() and
    log_likelihood(x, z) as torch distributions: z ~ q drawn by `sample`, seeded per batch
    (so the estimate depends on batch_size here, unlike the Gaussian path above, which draws
    noise per example)."""
    device = model_device(model)
    batch_size = max(1, min(batch_size, IWAE_NOISE_SAMPLES // k))
    estimates = []
    with inference(model):
        prior = model.prior()
        for first in range(0, len(x), batch_size):
            xb = x[first : first + batch_size].to(device)
            q = model.posterior(xb)
            total = torch.full((len(xb),), -math.inf, dtype=torch.float64, device=device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(_example_seed(seed, first))
                for start in range(0, k, sample_chunk):
                    z = q.sample((min(sample_chunk, k - start),))  # (s, b, ...)
                    log_w = model.log_likelihood(xb, z).double() + prior.log_prob(z).double() - q.log_prob(z).double()
                    total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
            estimates.append((total - math.log(k)).cpu())
    return torch.cat(estimates)


def kl_per_dim(model: nn.Module, x: Tensor, batch_size: int = 1024) -> np.ndarray:
    """Mean analytic KL(q(z_d|x) || N(0, 1)) per latent dim over `x`, (latent_dim,) float64
    nats; it sums to the mean KL. Shows which dims carry information (collapsed dims ~0)."""
    if lacks(model, "posterior") or not gaussian_standard(model):
        raise ValueError("kl_per_dim needs a Gaussian posterior (encode -> mu, logvar) and the N(0, I) prior")
    device = model_device(model)
    total = None
    with inference(model):
        for xb in x.split(batch_size):
            mu, logvar = model.encode(xb.to(device))
            part = gaussian_kl_per_dim(mu.double(), logvar.double()).sum(0).cpu()
            total = part if total is None else total + part
    return (total / len(x)).numpy()
