"""Training objectives, by name.

An objective is `fn(model, x, *, kl_weight=1.0, generator=None, **hparams) -> LossRecord`.
Its other keyword arguments (and their defaults) are its hyperparameters, which the
registry reads from the signature. `model` is anything with encode/decode/nll (duck-typed
so this file does not import the model). All per-sample terms are sums over pixels and
latents, in nats; `loss` is their batch mean, so reconstruction and KL always live on
the same scale.

Whatever an objective optimises, its record reports the true single-sample ELBO terms
(recon, analytic KL, elbo = -(recon + kl)) of one reparameterised sample drawn exactly as
`vae` draws it, so the same generator state gives the same recon/kl/elbo for every
variational objective and leaderboards compare them on one footing.

Objectives that need state across steps (the capacity schedule of `annealed_vae`) keep it
on the model as a buffer that `OBJECTIVE_SETUP` adds at build time, so train.py stays
unaware of it and checkpoints carry it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .base import LOG_2PI, LossRecord, Objective, gaussian_kl, reparameterize


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mu, exp(logvar)) (no sum), broadcasting over any leading dims."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def posterior_sample(
    model: Any, x: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(mu, logvar, z, recon, kl) for one reparameterised z ~ q(z|x): the shared first step
    of every variational objective, so they all consume the generator identically."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    recon = model.nll(model.decode(z), x)
    return mu, logvar, z, recon, gaussian_kl(mu, logvar)


def elbo_record(loss: Tensor, recon: Tensor, kl: Tensor) -> LossRecord:
    """The record every variational objective returns: its loss, the true ELBO terms."""
    return LossRecord(loss=loss, recon=recon, kl=kl, elbo=-(recon + kl))


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
    _, _, _, recon, kl = posterior_sample(model, x, generator)
    return elbo_record((recon + (beta * kl_weight) * kl).mean(), recon, kl)


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


# --- beta-TCVAE -----------------------------------------------------------------------------


def kl_decomposition(z: Tensor, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample (index-code MI, total correlation, dimension-wise KL) of Chen et al. (2018),
    estimated on the minibatch; the three sum to log q(z|x) - log p(z) exactly.

    The aggregate posterior q(z) = mean_n q(z|x_n) is estimated by minibatch weighted
    sampling with the minibatch as the population: log q(z_i) ~ logsumexp_j log q(z_i|x_j)
    - log B, and likewise per dimension for prod_d q(z_d). Chen et al. subtract log(N B)
    instead (N = dataset size); that differs by the parameter-free constant
    (alpha + beta (D - 1) - gamma D) log N in the loss, so the gradients and the training are
    the same for any N, and no dataset size is needed. Ours is exact when q(z|x) does not
    depend on x, and keeps MI <= log B (a minibatch cannot resolve more).
    """
    log_q_matrix = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (B_i, B_j, D)
    log_batch = math.log(z.shape[0])
    log_qz_x = gaussian_log_density(z, mu, logvar).sum(1)
    log_qz = torch.logsumexp(log_q_matrix.sum(2), dim=1) - log_batch
    log_prod_qzd = (torch.logsumexp(log_q_matrix, dim=1) - log_batch).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return log_qz_x - log_qz, log_qz - log_prod_qzd, log_prod_qzd - log_pz


def beta_tcvae(
    model: Any,
    x: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 6.0,
    gamma: float = 1.0,
    kl_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> LossRecord:
    """β-TCVAE (Chen et al., 2018): recon + kl_weight * (alpha MI + beta TC + gamma dim-wise KL).

    beta weights the total correlation, the term that penalises dependence between latents;
    the decomposition is estimated on the minibatch (see `kl_decomposition`), so the batch
    must hold more than one example to say anything about q(z). At alpha = beta = gamma = 1
    the loss is recon + log q(z|x) - log p(z), the VAE loss with a Monte-Carlo instead of an
    analytic KL. The record reports the analytic KL and the true ELBO.
    """
    mu, logvar, z, recon, kl = posterior_sample(model, x, generator)
    mi, tc, dim_kl = kl_decomposition(z, mu, logvar)
    penalty = alpha * mi + beta * tc + gamma * dim_kl
    return elbo_record((recon + kl_weight * penalty).mean(), recon, kl)


# --- capacity-annealed beta-VAE ----------------------------------------------------------------

STEP_BUFFER = "objective_step"


def add_step_counter(model: nn.Module) -> None:
    """Register the optimisation-step counter a scheduled objective reads (0 at build)."""
    model.register_buffer(STEP_BUFFER, torch.zeros((), dtype=torch.long))


def training_step(model: nn.Module) -> Tensor:
    """This step's index, a 0-d tensor on the model's device (reading it never synchronises
    a GPU); in training mode the model's counter then advances by one.

    Evaluation (eval mode) reads the counter without moving it, so validation passes and
    test scores see the schedule where training left it.
    """
    counter = getattr(model, STEP_BUFFER, None)
    if counter is None:
        raise AttributeError(f"model has no {STEP_BUFFER!r} buffer: build it with models.build()")
    step = counter.clone()
    if model.training:
        counter.add_(1)
    return step


def capacity(step: Tensor | int, c_max: float, c_steps: int) -> Tensor:
    """The target KL C at `step`: linear from 0 to c_max over c_steps steps, then c_max."""
    return c_max * torch.clamp(torch.as_tensor(step).float() / c_steps, max=1.0)


def annealed_vae(
    model: Any,
    x: Tensor,
    *,
    gamma: float = 10.0,
    c_max: float = 25.0,
    c_steps: int = 2000,
    kl_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> LossRecord:
    """Capacity-annealed β-VAE (Burgess et al., 2018): recon + kl_weight * gamma * |KL - C|.

    KL is the batch-mean KL and C rises linearly from 0 to c_max nats over c_steps
    optimisation steps, counted on the model (see `training_step`). c_max = 25 is the
    paper's dSprites value. The paper's gamma = 1000 and 100,000-step ramp suit long GPU
    runs; the defaults here suit CPU runs of a few thousand steps. Measured on dsprites
    (conv, batch 64, Adam 5e-4): with gamma = 1000 or 100 the model stayed on the
    blank-image plateau (recon ~750 nats, the mean image) for 6-9 epochs while its KL
    followed C with uninformative posteriors, as the |KL - C| gradient swamps Adam's
    per-parameter step for the encoder; gamma = 10 left the plateau in two epochs and kept
    KL within ~1-2 nats of C. c_steps = 2,000 is about ten epochs of 14,000 images at batch
    size 64: set it to the length of your run. The record reports the true ELBO.
    """
    target = capacity(training_step(model), c_max, c_steps)
    _, _, _, recon, kl = posterior_sample(model, x, generator)
    return elbo_record(recon.mean() + kl_weight * gamma * (kl.mean() - target).abs(), recon, kl)


# --- IWAE ------------------------------------------------------------------------------------


def iwae(
    model: Any,
    x: Tensor,
    *,
    k: int = 5,
    kl_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> LossRecord:
    """IWAE (Burda et al., 2015): minimise -log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i|x).

    The k samples are drawn one after another, so sample 0 uses exactly the noise `vae`
    would use, for any k and device. The gradient is the standard reparameterised one of the log-mean-exp: it
    flows through the (self-normalised) importance weights, nothing is detached and there
    is no "sticking the landing". One documented addition: the zero-mean control variate
    mean_i delta_i, delta_i = log p(z_i) - log q(z_i|x) + KL(q(z|x) || p(z)), is subtracted.
    It changes neither the expected bound nor the expected gradient, vanishes as k grows,
    and at k = 1 makes the loss exactly the VAE loss (recon + analytic KL) for the same
    noise. kl_weight scales log p(z) - log q(z|x) inside each weight (KL warm-up).
    The record reports sample 0's ELBO terms, comparable with the other objectives.
    """
    if k < 1:
        raise ValueError(f"iwae needs k >= 1, got {k}")
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    eps = torch.stack([torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device) for _ in range(k)])
    z = mu + std * eps  # (k, B, D); sample 0 is drawn exactly as reparameterize draws it
    recon = model.nll(model.decode(z.flatten(0, 1)), x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
    kl = gaussian_kl(mu, logvar)
    log_ratio = (gaussian_log_density(z, 0.0, torch.zeros_like(z)) - gaussian_log_density(z, mu, logvar)).sum(2)
    delta = log_ratio + kl  # zero mean under q, for every parameter value
    log_w = -recon + kl_weight * log_ratio
    bound = torch.logsumexp(log_w, dim=0) - math.log(k) - kl_weight * delta.mean(0)
    return elbo_record(-bound.mean(), recon[0], kl)


OBJECTIVES: dict[str, Objective] = {
    "ae": ae,
    "vae": vae,
    "beta_vae": beta_vae,
    "beta_tcvae": beta_tcvae,
    "annealed_vae": annealed_vae,
    "iwae": iwae,
}

# What a model trained with each objective can do (models/base.py CAPABILITIES); an objective
# not named here has a Gaussian posterior and everything else.
OBJECTIVE_CAPABILITIES: dict[str, frozenset[str]] = {
    "ae": frozenset({"codes"}),  # no posterior: no KL, no ELBO, no sampling from the prior
}
DETERMINISTIC_OBJECTIVES: frozenset[str] = frozenset(
    name for name, caps in OBJECTIVE_CAPABILITIES.items() if "elbo" not in caps
)

# State an objective keeps on the model, added by models.build() right after construction.
OBJECTIVE_SETUP: dict[str, Callable[[nn.Module], None]] = {
    "annealed_vae": add_step_counter,
}
