"""Scores for a model and its latent codes.

Two layers:
- pure functions over numpy arrays (`cluster_accuracy`, `clustering_scores`,
  `probe_accuracy`), importable and testable on their own;
- model-level helpers that speak only the model contract (`encode`, `decode`, `nll`,
  `loss`, `is_variational`): `posterior_means`, `elbo_terms`, `iwae_log_likelihood`, and
  `evaluate`, which names everything `<split>_<metric>` as DESIGN.md fixes.

Likelihoods are nats per example. Every estimate is seeded, so the same model, data and
seed give the same numbers.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score, silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor, nn
from torch.distributions import Normal

if TYPE_CHECKING:
    from vaebench.data import Dataset, Split

LATENT_SCORES = ("nmi", "ari", "cluster_acc", "silhouette", "probe_acc")


# --- pure metrics over arrays -------------------------------------------------------------


def cluster_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Fraction correct under the best one-to-one map of cluster ids to labels (Hungarian),
    since cluster ids are arbitrary."""
    counts = confusion_matrix(labels, pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


PARTITION_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "nmi": normalized_mutual_info_score,
    "ari": adjusted_rand_score,
    "cluster_acc": cluster_accuracy,
}


def label_silhouette(latents: np.ndarray, labels: np.ndarray, seed: int = 0, max_points: int = 2000) -> float:
    """Silhouette of the TRUE classes in latent space (how separated they are), on a seeded
    random subsample of at most `max_points` (it is quadratic); NaN when undefined."""
    n_labels = np.unique(labels).size
    if not 2 <= n_labels < len(labels):
        return math.nan
    sample_size = max_points if len(labels) > max_points else None
    return float(silhouette_score(latents, labels, sample_size=sample_size, random_state=seed))


def clustering_scores(
    latents: np.ndarray,
    labels: np.ndarray,
    n_clusters: int | None = None,
    seed: int = 0,
    silhouette_max: int = 2000,
) -> dict[str, float]:
    """k-means on the latents scored against the labels (nmi, ari, cluster_acc), plus the
    silhouette of the labels themselves. k defaults to the number of distinct labels."""
    k = n_clusters if n_clusters is not None else np.unique(labels).size
    # One OpenMP thread: latent sets are small, and with busy cores (parallel trials, torch
    # threads) KMeans' OpenMP barriers made it ~200x slower in measurements.
    with threadpool_limits(limits=1, user_api="openmp"):
        pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(latents)
    scores = {name: float(score(labels, pred)) for name, score in PARTITION_SCORES.items()}
    scores["silhouette"] = label_silhouette(latents, labels, seed, silhouette_max)
    return scores


def probe_accuracy(
    train_latents: np.ndarray,
    train_labels: np.ndarray,
    test_latents: np.ndarray,
    test_labels: np.ndarray,
    seed: int = 0,
) -> float:
    """Test accuracy of a linear probe (standardised logistic regression): how linearly
    decodable the labels are from the codes."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(train_latents, train_labels)
    return float(probe.score(test_latents, test_labels))


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
    """Posterior means mu(x), (N, latent_dim): the codes the latent scores are computed on."""
    device = model_device(model)
    with inference(model):
        means = [model.encode(xb.to(device))[0].cpu() for xb in x.split(batch_size)]
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


def _log_weights(model: nn.Module, x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps; (b, s) float64."""
    b, s, d = eps.shape
    std = torch.exp(0.5 * logvar).unsqueeze(1)
    z = mu.unsqueeze(1) + std * eps
    x_rep = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
    log_px_z = -model.nll(model.decode(z.reshape(b * s, d)), x_rep).double().view(b, s)
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


def iwae_log_likelihood(
    model: nn.Module, x: Tensor, k: int, batch_size: int = 256, seed: int = 0, sample_chunk: int = 64
) -> Tensor:
    """Importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per
    example (N,) float64. Tighter than the ELBO as k grows, equal to it in expectation at
    k=1, exact at any k when q is the true posterior.

    Memory is bounded by batch_size * sample_chunk decoded samples; noise is drawn per
    example, so batch_size and sample_chunk do not change the result.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not model.is_variational:
        raise ValueError("iwae_log_likelihood needs a model with a posterior q(z|x)")
    device = model_device(model)
    estimates = []
    with inference(model):
        for first in range(0, len(x), batch_size):
            xb = x[first : first + batch_size].to(device)
            mu, logvar = model.encode(xb)
            eps = _example_noise(seed, first, k, mu)
            estimates.append(_iwae_batch(model, xb, mu, logvar, eps, sample_chunk))
    return torch.cat(estimates)


# --- evaluate -----------------------------------------------------------------------------


def latent_scores(model: nn.Module, ds: Dataset, split: Split, batch_size: int = 1024, seed: int = 0) -> dict[str, float]:
    """Clustering and linear-probe scores on posterior means of `split`; the probe is
    trained on the train split. NaN everywhere if the codes are not finite."""
    codes = posterior_means(model, split.x, batch_size)
    train_codes = posterior_means(model, ds.train.x, batch_size)
    if not (np.isfinite(codes).all() and np.isfinite(train_codes).all()):
        return dict.fromkeys(LATENT_SCORES, math.nan)
    labels = split.y.numpy()
    scores = clustering_scores(codes, labels, seed=seed)
    scores["probe_acc"] = probe_accuracy(train_codes, ds.train.y.numpy(), codes, labels, seed)
    return scores


def evaluate(
    model: nn.Module, ds: Dataset, split: str = "test", batch_size: int = 1024, seed: int = 0, iwae_k: int = 0
) -> dict[str, float]:
    """All scores of one split as `<split>_<metric>` floats, plus `eval_samples_per_s`
    (likelihood pass only). `elbo`, `kl` and `iwae_ll` are absent for models without a
    posterior; `iwae_ll` only when iwae_k > 0."""
    data = ds.split(split)
    start = time.perf_counter()
    terms = elbo_terms(model, data.x, batch_size, seed)
    seconds = time.perf_counter() - start
    scores = {name: float(values.mean()) for name, values in terms.items()}
    if iwae_k > 0 and model.is_variational:
        scores["iwae_ll"] = float(iwae_log_likelihood(model, data.x, iwae_k, seed=seed).mean())
    scores.update(latent_scores(model, ds, data, batch_size, seed))
    result = {f"{split}_{name}": value for name, value in scores.items()}
    result["eval_samples_per_s"] = len(data) / seconds
    return result
