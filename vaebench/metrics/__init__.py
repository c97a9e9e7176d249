"""Scores for a model and its latent codes.

Two layers:
- pure functions over numpy arrays (`cluster_accuracy`, `clustering_scores`,
  `probe_accuracy`, `active_units_from_means`, `mig`, `dci`), importable and testable on
  their own;
- model-level helpers that speak only the model contract and its capabilities
  (models/base.py): `posterior_means` (the model's codes), `elbo_terms`, `iwae_log_likelihood`,
  `active_units`, `kl_per_dim`, and `evaluate`, which names everything `<split>_<metric>`
  as DESIGN.md fixes and gives NaN where the model lacks a capability (`skipped` says why).

Likelihoods are nats per example. Every estimate is seeded, so the same model, data and
seed give the same numbers.
"""
from vaebench.metrics.disentanglement import (
    DISENTANGLEMENT_POINTS,
    DISENTANGLEMENT_SCORES,
    check_codes_factors,
    dci,
    dci_from_importance,
    discretize,
    disentanglement_scores,
    factor_entropies,
    importance_and_accuracy,
    mig,
    mutual_information,
    normalized_entropy,
)
from vaebench.metrics.evaluate import NEEDS, evaluate, nan_reasons, skipped
from vaebench.metrics.latent import (
    ACTIVE_UNIT_THRESHOLD,
    LATENT_SCORES,
    PARTITION_SCORES,
    active_units,
    active_units_from_means,
    cluster_accuracy,
    clustering_scores,
    label_silhouette,
    latent_scores,
    probe_accuracy,
)
from vaebench.metrics.likelihood import (
    IWAE_DECODE_ROWS,
    IWAE_NOISE_SAMPLES,
    elbo_terms,
    inference,
    iwae_log_likelihood,
    kl_per_dim,
    model_device,
    posterior_means,
)

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "DISENTANGLEMENT_POINTS",
    "DISENTANGLEMENT_SCORES",
    "IWAE_DECODE_ROWS",
    "IWAE_NOISE_SAMPLES",
    "LATENT_SCORES",
    "PARTITION_SCORES",
    "active_units",
    "active_units_from_means",
    "check_codes_factors",
    "cluster_accuracy",
    "clustering_scores",
    "dci",
    "dci_from_importance",
    "discretize",
    "disentanglement_scores",
    "elbo_terms",
    "evaluate",
    "NEEDS",
    "skipped",
    "nan_reasons",
    "factor_entropies",
    "importance_and_accuracy",
    "inference",
    "iwae_log_likelihood",
    "kl_per_dim",
    "label_silhouette",
    "latent_scores",
    "mig",
    "model_device",
    "mutual_information",
    "normalized_entropy",
    "posterior_means",
    "probe_accuracy",
]
