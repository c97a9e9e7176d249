"""evaluate(): every score of one split, named `<split>_<metric>`, composed from the scorers."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from vaebench.metrics.disentanglement import (
    DISENTANGLEMENT_POINTS,
    DISENTANGLEMENT_SCORES,
    disentanglement_scores,
)
from vaebench.metrics.latent import (
    LATENT_SCORES,
    active_units_from_means,
    latent_scores,
)
from vaebench.metrics.likelihood import elbo_terms, iwae_log_likelihood, posterior_means
from vaebench.models.base import IWAE_NEEDS, capabilities, lacks

if TYPE_CHECKING:
    from vaebench.data import Dataset


# The capabilities each score needs (models/base.py); a model without them gets NaN there.
NEEDS: dict[str, tuple[str, ...]] = {
    "elbo": ("elbo",),
    "kl": ("elbo",),
    "iwae_ll": IWAE_NEEDS,
    "active_units": ("posterior", "codes"),
    **dict.fromkeys(LATENT_SCORES, ("codes",)),
    **dict.fromkeys(DISENTANGLEMENT_SCORES, ("codes",)),
}


def _reasons(model: nn.Module, iwae_k: int, factors: bool) -> dict[str, str]:
    """{metric: why} for the scores `model` lacks a capability for."""
    wanted = [m for m in NEEDS if (m != "iwae_ll" or iwae_k > 0) and (m not in DISENTANGLEMENT_SCORES or factors)]
    reasons = {m: lacks(model, *NEEDS[m]) for m in wanted}
    return {m: why for m, why in reasons.items() if why}


def skipped(model: nn.Module, split: str = "test", iwae_k: int = 0, factors: bool = False) -> dict[str, str]:
    """{`<split>_<metric>`: why it is NaN} for the scores `evaluate` gives `model` as NaN
    because it lacks a capability, e.g. `skipped: no posterior`: recorded on the run."""
    return {f"{split}_{m}": why for m, why in _reasons(model, iwae_k, factors).items()}


# Scores that can come out NaN for a model that has every capability they need, and why.
NAN_REASONS = {"probe_acc": "the linear probe did not converge (metrics.latent.fit_probe)"}


def nan_reasons(scores: dict[str, float], explained: dict[str, str]) -> dict[str, str]:
    """{`<split>_<metric>`: why it is NaN} for the NaN `scores` that `explained` (the missing
    capabilities) does not cover: a NaN is never left without a reason on the run."""
    return {key: NAN_REASONS.get(key.split("_", 1)[1], "not a finite number for this model")
            for key, value in scores.items() if key not in explained and math.isnan(value)}


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
    (likelihood pass only). A score whose capability the model lacks is NaN (`skipped` says
    why), never a made-up number; `iwae_ll` only when iwae_k > 0; `mig` and `dci_*` only when
    the dataset has ground-truth factors. Latent scores are on the model's codes of the split."""
    data = ds.split(split)
    can = capabilities(model)
    start = time.perf_counter()
    terms = elbo_terms(model, data.x, batch_size, seed)
    seconds = time.perf_counter() - start
    scores = {name: float(values.mean()) for name, values in terms.items()}
    if iwae_k > 0:
        scores["iwae_ll"] = float(iwae_log_likelihood(model, data.x, iwae_k, seed=seed).mean()) \
            if set(IWAE_NEEDS) <= can else math.nan
    if "codes" in can:
        codes = posterior_means(model, data.x, batch_size)
        if "posterior" in can:
            scores["active_units"] = float(active_units_from_means(codes)) if np.isfinite(codes).all() else math.nan
        scores.update(latent_scores(model, ds, data, batch_size, seed, codes))
        if data.factors is not None:
            scores.update(disentanglement_scores(codes, data.factors.numpy(), seed, disentanglement_points))
    scores.update(dict.fromkeys(_reasons(model, iwae_k, data.factors is not None), math.nan))
    result = {f"{split}_{name}": value for name, value in scores.items()}
    result["eval_samples_per_s"] = len(data) / seconds
    return result
