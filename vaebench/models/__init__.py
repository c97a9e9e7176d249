"""Models: architecture x objective x likelihood, composed by `build()` into a VAEModel, or a
whole model brought by a plugin; every one fulfils the contract of base.py (docs/models.md).

    from vaebench import models
    m = models.build(arch="mlp", objective="beta_vae", latent_dim=10, beta=4.0,
                     likelihood="bernoulli", input_shape=(1, 28, 28))
    record = m.loss(x)          # LossRecord: loss, recon, kl, elbo
"""
from .architectures import ACTIVATIONS, ARCHITECTURES
from .base import (
    CAPABILITIES,
    LossRecord,
    capabilities,
    diagonal_gaussian,
    gaussian_kl,
    gaussian_kl_per_dim,
    kl_divergence,
    lacks,
    n_params,
    reparameterize,
    standard_normal,
)
from .likelihoods import LIKELIHOODS
from .model import VAEModel
from .objectives import OBJECTIVES
from .registry import MODELS, arch_hparams, build, describe, is_whole_model, objective_hparams, register

__all__ = [
    "CAPABILITIES",
    "MODELS",
    "capabilities",
    "diagonal_gaussian",
    "is_whole_model",
    "kl_divergence",
    "lacks",
    "n_params",
    "register",
    "standard_normal",
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
