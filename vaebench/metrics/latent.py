"""Latent structure: clustering scores, the linear probe and active units, as pure functions
over code arrays, and `latent_scores` on a model's posterior means."""
from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import expit, softmax
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    confusion_matrix,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController
from torch import Tensor, nn

from vaebench.metrics.likelihood import posterior_means

if TYPE_CHECKING:
    from vaebench.data import Dataset, Split

LATENT_SCORES = ("nmi", "ari", "cluster_acc", "silhouette", "probe_acc")
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015): Cov_x(E_q[z_d|x]) above this is "active"


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # found once per process: a fresh search per limit takes milliseconds


def one_thread():  # threadpoolctl's limiter, a context manager
    """One BLAS and one OpenMP thread for numpy's and scikit-learn's work on small arrays:
    multi-threaded, their pools spin-wait after the work (and at their barriers on busy cores),
    costing many times the work and slowing down whatever torch runs next."""
    return _threadpools().limit(limits=1)


# --- pure metrics over arrays -------------------------------------------------------------


def cluster_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Fraction correct under the best one-to-one map of cluster ids to labels (Hungarian),
    since cluster ids are arbitrary."""
    counts = confusion_matrix(labels, pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def label_silhouette(latents: np.ndarray, labels: np.ndarray, seed: int = 0, max_points: int = 2000) -> float:
    """Silhouette of the TRUE classes in latent space (how separated they are), on a seeded
    random subsample of at most `max_points` (it is quadratic); NaN when undefined."""
    n_labels = np.unique(labels).size
    if not 2 <= n_labels < len(labels):
        return math.nan
    sample_size = max_points if len(labels) > max_points else None
    return float(silhouette_score(latents, labels, sample_size=sample_size, random_state=seed))


PARTITION_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "nmi": normalized_mutual_info_score,
    "ari": adjusted_rand_score,
    "cluster_acc": cluster_accuracy,
}


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
    with _threadpools().limit(limits=1, user_api="openmp"):
        pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(latents)
    scores = {name: float(score(labels, pred)) for name, score in PARTITION_SCORES.items()}
    scores["silhouette"] = label_silhouette(latents, labels, seed, silhouette_max)
    return scores


PROBE_TOL = 1e-10  # the largest gradient entry asked of the solver (scikit-learn's tol)
PROBE_MAX_ITER = 100  # Newton steps; the probes of vaebench's codes take 5-15
PROBE_GRADIENT = 1e-6  # the largest gradient entry a probe may be left with: past it, NaN


def probe_gradient(probe: Pipeline, x: np.ndarray, y: np.ndarray) -> float:
    """The largest entry of the gradient of the probe's objective at its solution: scikit-learn's
    mean log-loss over the standardised codes plus ||W||^2 / (2 C n), intercepts unpenalised."""
    scaler, model = probe[0], probe[-1]
    z = scaler.transform(x)
    logits = z @ model.coef_.T + model.intercept_
    if len(model.classes_) == 2:  # one column: P(second class)
        p, target = expit(logits), (y == model.classes_[1])[:, None]
    else:
        p, target = softmax(logits, axis=1), y[:, None] == model.classes_[None, :]
    residual = p - target
    n = len(x)
    grad_w = residual.T @ z / n + model.coef_ / (model.C * n)
    return float(max(np.abs(grad_w).max(), np.abs(residual.mean(axis=0)).max()))


def fit_probe(train_latents: np.ndarray, train_labels: np.ndarray) -> Pipeline | None:
    """A linear probe (standardised, L2-regularised multinomial logistic regression) solved by
    exact Newton steps (`newton-cholesky`) to its optimum: its loss is strictly convex, so the
    fit is a function of the codes alone, not of a solver's starting point, path or row order
    (lbfgs stopping at scikit-learn's default tol=1e-4 left coefficients 0.05 away from the
    optimum, enough to move the accuracy by a test point or two). Whether it got there is read
    from the gradient itself (probe_gradient <= PROBE_GRADIENT), not from the solver's warnings:
    a line search stopped by rounding at the optimum warns too (newton-cg did so on most VAE
    codes), and a stalled one can use up every step. None when it did not get there."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", tol=PROBE_TOL,
                                                               max_iter=PROBE_MAX_ITER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_latents, train_labels)
    return probe if probe_gradient(probe, train_latents, train_labels) <= PROBE_GRADIENT else None


def probe_accuracy(
    train_latents: np.ndarray,
    train_labels: np.ndarray,
    test_latents: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Test accuracy of the linear probe (fit_probe): how linearly decodable the labels are from
    the codes; NaN when the probe did not converge (an unconverged fit is not a score of the codes)."""
    probe = fit_probe(train_latents, train_labels)
    return math.nan if probe is None else float(probe.score(test_latents, test_labels))


def active_units_from_means(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dims whose posterior mean varies across inputs: Var_x(E_q[z_d|x]) > threshold
    (Burda et al., 2015). An inactive dim encodes nothing: its posterior is the same for
    every x. Population variance (ddof=0) over the rows of `means` (N, latent_dim)."""
    return int((np.var(np.asarray(means, dtype=np.float64), axis=0) > threshold).sum())


# --- evaluate -----------------------------------------------------------------------------


def active_units(
    model: nn.Module, x: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD, batch_size: int = 1024
) -> int:
    """Number of active latent dims of `model` on `x` (see active_units_from_means)."""
    return active_units_from_means(posterior_means(model, x, batch_size), threshold)


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
    with one_thread():
        scores = clustering_scores(codes, labels, seed=seed)
        scores["probe_acc"] = probe_accuracy(train_codes, ds.train.y.numpy(), codes, labels)
    return scores
