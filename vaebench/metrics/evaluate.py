"""evaluate(): every score of one split, named `<split>_<metric>`, composed from the scorers."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from vaebench.metrics.disentanglement import (
    DISENTANGLEMENT_POINTS,
    disentanglement_scores,
)
from vaebench.metrics.latent import active_units_from_means, latent_scores
from vaebench.metrics.likelihood import elbo_terms, iwae_log_likelihood, posterior_means

if TYPE_CHECKING:
    from vaebench.data import Dataset


def evaluate(
    model: nn.Module,
    ds: Dataset,
    split: str = "test",
    batch_size: int = 1024,
    seed: int = 0,
    iwae_k: int = 0,
    disentanglement_points: int = DISENTANGLEMENT_POINTS,
) -> dict[str, float]:
    """All scores of one split as `<split>_<metric>` floats, plus `eval_samples_per_s`
    (likelihood pass only). `elbo`, `kl`, `active_units` and `iwae_ll` are absent for models
    without a posterior; `iwae_ll` only when iwae_k > 0; `mig` and `dci_*` only when the
    dataset has ground-truth factors. Latent scores are on posterior means of the split."""
    data = ds.split(split)
    start = time.perf_counter()
    terms = elbo_terms(model, data.x, batch_size, seed)
    seconds = time.perf_counter() - start
    scores = {name: float(values.mean()) for name, values in terms.items()}
    if iwae_k > 0 and model.is_variational:
        scores["iwae_ll"] = float(iwae_log_likelihood(model, data.x, iwae_k, seed=seed).mean())
    codes = posterior_means(model, data.x, batch_size)
    if model.is_variational:
        scores["active_units"] = float(active_units_from_means(codes)) if np.isfinite(codes).all() else math.nan
    scores.update(latent_scores(model, ds, data, batch_size, seed, codes))
    if data.factors is not None:
        scores.update(disentanglement_scores(codes, data.factors.numpy(), seed, disentanglement_points))
    result = {f"{split}_{name}": value for name, value in scores.items()}
    result["eval_samples_per_s"] = len(data) / seconds
    return result
