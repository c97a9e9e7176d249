"""Scores for a model and its latent codes.

Two layers:
- pure functions over numpy arrays (`cluster_accuracy`, `clustering_scores`,
  `probe_accuracy`, `active_units_from_means`, `mig`, `dci`), importable and testable on
  their own;
- model-level helpers that speak only the model contract (`encode`, `decode`, `nll`,
  `loss`, `is_variational`): `posterior_means`, `elbo_terms`, `iwae_log_likelihood`,
  `active_units`, `kl_per_dim`, and `evaluate`, which names everything `<split>_<metric>`
  as DESIGN.md fixes.

Likelihoods are nats per example. Every estimate is seeded, so the same model, data and
seed give the same numbers.
"""
from vaebench.metrics.likelihood import (
    inference,
    model_device,
    posterior_means,
    elbo_terms,
    IWAE_NOISE_SAMPLES,
    IWAE_DECODE_ROWS,
    iwae_log_likelihood,
    kl_per_dim,
)
from vaebench.metrics.latent import (
    LATENT_SCORES,
    ACTIVE_UNIT_THRESHOLD,
    cluster_accuracy,
    label_silhouette,
    PARTITION_SCORES,
    clustering_scores,
    probe_accuracy,
    active_units_from_means,
    active_units,
    latent_scores,
)
from vaebench.metrics.disentanglement import (
    DISENTANGLEMENT_SCORES,
    DISENTANGLEMENT_POINTS,
    check_codes_factors,
    discretize,
    mutual_information,
    factor_entropies,
    mig,
    normalized_entropy,
    dci_from_importance,
    importance_and_accuracy,
    dci,
    disentanglement_scores,
)
from vaebench.metrics.evaluate import (
    evaluate,
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
