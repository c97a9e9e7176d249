"""Models: architecture x objective x likelihood, composed by `build()` into a VAEModel.

    from vaebench import models
    m = models.build(arch="mlp", objective="beta_vae", latent_dim=10, beta=4.0,
                     likelihood="bernoulli", input_shape=(1, 28, 28))
    record = m.loss(x)          # LossRecord: loss, recon, kl, elbo
"""
from .architectures import ACTIVATIONS, ARCHITECTURES
from .base import LossRecord, gaussian_kl, gaussian_kl_per_dim, reparameterize
from .likelihoods import LIKELIHOODS
from .model import VAEModel
from .objectives import OBJECTIVES
from .registry import arch_hparams, build, describe, objective_hparams

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "LIKELIHOODS",
    "OBJECTIVES",
    "LossRecord",
    "VAEModel",
    "arch_hparams",
    "build",
    "describe",
    "gaussian_kl",
    "gaussian_kl_per_dim",
    "objective_hparams",
    "reparameterize",
]
