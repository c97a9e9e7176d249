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
from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import entropy
from sklearn.cluster import KMeans
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    confusion_matrix,
    mutual_info_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor, nn
from torch.distributions import Normal

from vaebench.models.base import gaussian_kl_per_dim

if TYPE_CHECKING:
    from vaebench.data import Dataset, Split

LATENT_SCORES = ("nmi", "ari", "cluster_acc", "silhouette", "probe_acc")
DISENTANGLEMENT_SCORES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness")
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015): Cov_x(E_q[z_d|x]) above this is "active"
DISENTANGLEMENT_POINTS = 4000  # MIG/DCI on at most this many codes (a seeded subsample)


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


def active_units_from_means(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dims whose posterior mean varies across inputs: Var_x(E_q[z_d|x]) > threshold
    (Burda et al., 2015). An inactive dim encodes nothing: its posterior is the same for
    every x. Population variance (ddof=0) over the rows of `means` (N, latent_dim)."""
    return int((np.var(np.asarray(means, dtype=np.float64), axis=0) > threshold).sum())


# --- disentanglement against ground-truth factors (pure) ---------------------------------------


def check_codes_factors(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """codes (N, D) float and factors (N, K) int with the same N, or a ValueError."""
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(f"need codes (N, D) and factors (N, K) with the same N >= 2, got {codes.shape}, {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, got dtype {factors.dtype}")
    return codes, factors


def discretize(codes: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Each column into `n_bins` equal-width bins over its own range: (N, D) ints in
    [0, n_bins). A constant column falls in one bin."""
    return np.stack(
        [np.digitize(col, np.histogram_bin_edges(col, bins=n_bins)[1:-1]) for col in np.asarray(codes).T], axis=1
    )


def mutual_information(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(D, K) mutual information in nats between every discrete code column and factor."""
    return np.array([[mutual_info_score(f, c) for f in factors.T] for c in discrete_codes.T])


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """(K,) entropy of each discrete factor in nats (H(f) = I(f; f), the MI's own units)."""
    return np.array([mutual_info_score(f, f) for f in factors.T])


def mig(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al., 2018): for each factor, the MI of the most
    informative code dim minus that of the runner-up, over the factor's entropy; averaged
    over factors. 1 = every factor is captured by one dim alone; 0 = none is, or two dims
    share it. Codes are discretised into n_bins equal-width bins; single-valued factors are
    skipped (NaN if all are)."""
    codes, factors = check_codes_factors(codes, factors)
    h = factor_entropies(factors)
    varying = h > 0
    if not varying.any():
        return math.nan
    mi = mutual_information(discretize(codes, n_bins), factors[:, varying])
    top = -np.sort(-np.vstack([mi, np.zeros((1, mi.shape[1]))]), axis=0)  # a zero row: D = 1 works
    return float(np.mean((top[0] - top[1]) / h[varying]))


def normalized_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of each (non-negative, unnormalised) distribution along `axis`, in units of
    log(its length), so in [0, 1]; a length-1 distribution has entropy 0. All-zero
    distributions give NaN (their callers weight them by zero)."""
    n = p.shape[axis]
    if n == 1:
        return np.zeros(p.shape[1 - axis])
    with np.errstate(invalid="ignore", divide="ignore"):
        return entropy(p, base=n, axis=axis)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of Eastwood & Williams (2018) from R (D latents x K
    factors): disentanglement = sum_i rho_i (1 - H_K(P_i.)), P_ij = R_ij / sum_k R_ik,
    rho_i = sum_j R_ij / sum R; completeness = mean_j (1 - H_D(R_.j / sum_i R_ij)).
    An all-zero R (no code predicts anything) scores 0 on both."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    if r.sum() == 0:
        return 0.0, 0.0
    rho = r.sum(axis=1) / r.sum()
    code_scores = 1.0 - normalized_entropy(r, axis=1)
    disentanglement = float(np.sum(rho[rho > 0] * code_scores[rho > 0]))
    completeness = float(np.mean(np.nan_to_num(1.0 - normalized_entropy(r, axis=0))))
    return disentanglement, completeness


def importance_and_accuracy(
    codes: np.ndarray, factors: np.ndarray, seed: int = 0, test_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """R (D, K) feature importances of one tree ensemble per factor, and each ensemble's
    held-out accuracy (K,).

    Extremely randomised trees (50 trees, every feature considered at each split, leaves of
    >= 10 points) instead of disentanglement_lib's gradient-boosted trees: GBT fits one
    tree per class and stage, ~20 s for a 40-class factor on 3,000 points, while these take
    ~0.1 s per factor on one core, and with all features in every split the importances are
    as concentrated (a code dim that carries nothing gets ~0). Rows are split at random
    (seeded) into train and a held-out `test_fraction` for the accuracy.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(codes))
    n_test = max(1, round(test_fraction * len(codes)))
    test, train = order[:n_test], order[n_test:]
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    accuracy = np.zeros(factors.shape[1])
    for j, f in enumerate(factors.T):
        trees = ExtraTreesClassifier(
            n_estimators=50, max_features=None, min_samples_leaf=10, random_state=seed, n_jobs=1
        ).fit(codes[train], f[train])
        importance[:, j] = trees.feature_importances_
        accuracy[j] = trees.score(codes[test], f[test])
    return importance, accuracy


def dci(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> dict[str, float]:
    """DCI (Eastwood & Williams, 2018): `disentanglement` (each code dim predicts one factor),
    `completeness` (each factor is predicted by one code dim), both from the importance
    matrix of `importance_and_accuracy`, and `informativeness`, the mean held-out accuracy
    of predicting each factor from all the codes. Single-valued factors are skipped (NaN
    everywhere if all are)."""
    codes, factors = check_codes_factors(codes, factors)
    varying = np.array([np.unique(f).size > 1 for f in factors.T])
    if not varying.any():
        return dict.fromkeys(("disentanglement", "completeness", "informativeness"), math.nan)
    importance, accuracy = importance_and_accuracy(codes, factors[:, varying], seed)
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness, "informativeness": float(accuracy.mean())}


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
    if not model.is_variational:
        raise ValueError("iwae_log_likelihood needs a model with a posterior q(z|x)")
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


def active_units(
    model: nn.Module, x: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD, batch_size: int = 1024
) -> int:
    """Number of active latent dims of `model` on `x` (see active_units_from_means)."""
    return active_units_from_means(posterior_means(model, x, batch_size), threshold)


def kl_per_dim(model: nn.Module, x: Tensor, batch_size: int = 1024) -> np.ndarray:
    """Mean analytic KL(q(z_d|x) || N(0, 1)) per latent dim over `x`, (latent_dim,) float64
    nats; it sums to the mean KL. Shows which dims carry information (collapsed dims ~0)."""
    if not model.is_variational:
        raise ValueError("kl_per_dim needs a model with a posterior q(z|x)")
    device = model_device(model)
    total = None
    with inference(model):
        for xb in x.split(batch_size):
            mu, logvar = model.encode(xb.to(device))
            part = gaussian_kl_per_dim(mu.double(), logvar.double()).sum(0).cpu()
            total = part if total is None else total + part
    return (total / len(x)).numpy()


# --- evaluate -----------------------------------------------------------------------------


def latent_scores(
    model: nn.Module, ds: Dataset, split: Split, batch_size: int = 1024, seed: int = 0, codes: np.ndarray | None = None
) -> dict[str, float]:
    """Clustering and linear-probe scores on posterior means of `split` (`codes` if already
    computed); the probe is trained on the train split. NaN everywhere if the codes are not
    finite."""
    codes = posterior_means(model, split.x, batch_size) if codes is None else codes
    train_codes = posterior_means(model, ds.train.x, batch_size)
    if not (np.isfinite(codes).all() and np.isfinite(train_codes).all()):
        return dict.fromkeys(LATENT_SCORES, math.nan)
    labels = split.y.numpy()
    # One BLAS/OpenMP thread for scikit-learn's small problems: multi-threaded, their pools
    # spin-wait after the work and slow down whatever torch runs next by ~70 ms.
    with threadpool_limits(limits=1):
        scores = clustering_scores(codes, labels, seed=seed)
        scores["probe_acc"] = probe_accuracy(train_codes, ds.train.y.numpy(), codes, labels, seed)
    return scores


def disentanglement_scores(
    codes: np.ndarray, factors: np.ndarray, seed: int = 0, max_points: int = DISENTANGLEMENT_POINTS
) -> dict[str, float]:
    """MIG and DCI of `codes` against ground-truth `factors`, on a seeded random subsample
    of at most `max_points` rows (DCI trains one tree ensemble per factor). NaN everywhere if
    the codes are not finite."""
    if not np.isfinite(codes).all():
        return dict.fromkeys(DISENTANGLEMENT_SCORES, math.nan)
    if len(codes) > max_points:
        rows = np.random.default_rng(seed).choice(len(codes), size=max_points, replace=False)
        codes, factors = codes[rows], factors[rows]
    scores = {"mig": mig(codes, factors)}
    scores |= {f"dci_{name}": value for name, value in dci(codes, factors, seed).items()}
    return scores


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
