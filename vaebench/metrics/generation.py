"""Generation scores: pure functions over feature arrays (N, D) and predicted classes, plus
the ex-post latent density (a Gaussian mixture fitted to the training codes) and its seeded
sampler. Nothing here touches a model: the caller embeds images with
`vaebench.metrics.feature_net.embed` and passes the arrays.

- `frechet_distance(a, b)`: Fréchet distance between Gaussians fitted to two feature sets;
  `gaussian_stats` + `frechet_distance_from_stats` let a reference set's moments be computed once.
- `precision_recall(real, fake, k)`: Kynkäänniemi et al. 2019 (k-NN manifolds, k = 3), with
  density and coverage (Naeem et al. 2020) from the same distances; `knn_radii` lets a
  reference set's radii be computed once.
- `class_scores(sample_classes, reference_classes)`: classes covered and the KL divergence of
  the samples' class histogram from the reference one.
- `fit_latent_gmm(codes)`, `sample_latent_gmm(gmm, n, seed)`.

Every result is a deterministic function of its inputs (and seed): float64 throughout.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import pairwise_distances_chunked
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

EIGEN_TOL = 1e-10  # eigenvalues above -EIGEN_TOL * (largest) are rounding: clipped to 0
KL_SMOOTHING = 0.5  # pseudo-count added to every class of both histograms (Jeffreys' prior)
COVERED_SHARE = 0.1  # a class is covered when its share of the samples is >= 10% of its share in the reference
GMM_TOL = 1e-2  # EM stops when the mean log-likelihood per code gains less (nats); see fit_latent_gmm
GMM_MAX_ITER = 100


class GaussianStats(NamedTuple):
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D), the unbiased sample covariance
    n: int


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name}: expected features (N >= 2, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or Inf")
    return x


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    """Mean and covariance (float64) of features (N, D)."""
    x = _features(features, "features")
    return GaussianStats(x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), len(x))


def _psd_eigvals(m: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric positive semi-definite matrix, negative rounding
    clipped to 0; a clearly negative eigenvalue is an error, not something to hide."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    floor = -EIGEN_TOL * max(float(np.abs(w).max(initial=0.0)), 1.0)
    if w.min(initial=0.0) < floor:
        raise ValueError(f"{what} is not positive semi-definite (eigenvalue {w.min():.3g})")
    return np.clip(w, 0.0, None), v


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr((A B)^½) for covariances A, B, computed as tr((A^½ B A^½)^½): A^½ B A^½ is symmetric
    PSD with the eigenvalues of A B, so both square roots are real eigen-decompositions and
    singular covariances (dead features) need no regularisation and give no complex parts."""
    w, v = _psd_eigvals(cov_a, "covariance a")
    root_a = (v * np.sqrt(w)) @ v.T
    inner, _ = _psd_eigvals(root_a @ cov_b @ root_a, "A^1/2 B A^1/2")
    return float(np.sqrt(inner).sum())


def frechet_distance_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    """|mu_a - mu_b|^2 + tr A + tr B - 2 tr((A B)^½). It is >= 0 in exact arithmetic; a
    negative result within rounding (1e-9 of the traces) is returned as 0, a larger one raises."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature dimensions differ: {a.mean.shape[0]} and {b.mean.shape[0]}")
    traces = float(np.trace(a.cov) + np.trace(b.cov))
    fd = float(np.sum((a.mean - b.mean) ** 2)) + traces - 2 * trace_sqrt_product(a.cov, b.cov)
    if fd < -1e-9 * max(traces, 1.0):
        raise ValueError(f"Fréchet distance {fd:.3g} < 0 beyond rounding")
    return max(fd, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein) distance between Gaussians fitted to feature arrays a
    (N, D) and b (M, D); squared units of the features, as FID."""
    return frechet_distance_from_stats(gaussian_stats(a), gaussian_stats(b))


def knn_radii(x: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance from each row of features x (N, D) to its k-th nearest other row (the row
    itself excluded): the radii of its k-NN manifold balls."""
    x = _features(x, "features")
    if len(x) <= k:
        raise ValueError(f"k = {k} needs more than {k} points, got {len(x)}")
    distances, _ = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()  # no query: each row's own index excluded
    return distances[:, -1]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     real_radii: np.ndarray | None = None) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage
    (Naeem et al. 2020) of `fake` against `real`, both (N, D) features. Each point spans a ball
    to its k-th nearest neighbour in its own set (closed balls, as in the papers):
    precision = share of fake points inside some real ball; recall = share of real points inside
    some fake ball; density = mean number of real balls holding a fake point, over k (can exceed
    1); coverage = share of real balls holding at least one fake point. `real_radii`:
    `knn_radii(real, k)` if already computed."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} and {fake.shape[1]}")
    r_real = knn_radii(real, k) if real_radii is None else np.asarray(real_radii, dtype=np.float64)
    if r_real.shape != (len(real),):
        raise ValueError(f"real_radii: expected shape ({len(real)},), got {r_real.shape}")
    r_fake = knn_radii(fake, k)
    in_real_ball = np.zeros(len(fake), dtype=np.int64)  # per fake point: how many real balls hold it
    covered = np.zeros(len(real), dtype=bool)  # per real point: some fake point in its ball
    recalled = np.zeros(len(real), dtype=bool)  # per real point: inside some fake ball
    start = 0
    for d in pairwise_distances_chunked(fake, real, working_memory=64):  # (rows of fake, len(real))
        rows = slice(start, start + len(d))
        inside = d <= r_real
        in_real_ball[rows] = inside.sum(1)
        covered |= inside.any(0)
        recalled |= (d <= r_fake[rows, None]).any(0)
        start += len(d)
    return {"precision": float((in_real_ball > 0).mean()), "recall": float(recalled.mean()),
            "density": float(in_real_ball.sum() / (k * len(fake))), "coverage": float(covered.mean())}


def class_histogram(classes: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Counts (n_classes,) of integer class labels in [0, n_classes)."""
    classes = np.asarray(classes)
    if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"class labels must be a 1-d integer array, got {classes.dtype} {classes.shape}")
    if len(classes) and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"class labels outside [0, {n_classes})")
    return np.bincount(classes, minlength=n_classes)


def class_scores(sample_classes: np.ndarray, reference_classes: np.ndarray, n_classes: int = 10,
                 smoothing: float = KL_SMOOTHING) -> dict[str, float]:
    """The samples' class histogram against the reference's (e.g. the test set), classes as
    predicted by the feature network: `classes_covered`, the number of classes whose share of
    the samples is at least COVERED_SHARE of their share in the reference; `class_kl`,
    KL(samples || reference) in nats of the histograms with `smoothing` added to every count."""
    s, r = class_histogram(sample_classes, n_classes), class_histogram(reference_classes, n_classes)
    if not s.sum() or not r.sum():
        raise ValueError("empty class labels")
    share_s, share_r = s / s.sum(), r / r.sum()
    p = (s + smoothing) / (s.sum() + n_classes * smoothing)
    q = (r + smoothing) / (r.sum() + n_classes * smoothing)
    return {"classes_covered": float(np.sum((share_r > 0) & (share_s >= COVERED_SHARE * share_r))),
            "class_kl": float(np.sum(p * np.log(p / q)))}


def fit_latent_gmm(codes: np.ndarray, n_components: int = 10, seed: int = 0,
                   covariance_type: str = "full", tol: float = GMM_TOL) -> GaussianMixture:
    """A Gaussian mixture fitted to latent codes (N, latent_dim), e.g. the posterior means of
    the training split: the ex-post density of Ghosh et al. 2020. float64, one k-means
    initialisation seeded by `seed` (n_init = 1), EM until the mean log-likelihood per code
    gains less than `tol` nats in an iteration (at most GMM_MAX_ITER iterations).

    GMM_TOL is ten times scikit-learn's default: the mixture only proposes codes to decode,
    and EM's last iterations, which refine its likelihood only slightly, move the
    generation scores no more than another sample seed does while costing most of the fit
    (both measured in results/benchmarks/generation.json). `converged_` on the result
    says whether EM converged."""
    x = _features(codes, "codes")
    if len(x) < n_components:
        raise ValueError(f"{n_components} components need at least as many codes, got {len(x)}")
    return GaussianMixture(n_components, covariance_type=covariance_type, tol=tol, max_iter=GMM_MAX_ITER,
                           n_init=1, random_state=seed).fit(x)


def _full_covariances(gmm: GaussianMixture) -> np.ndarray:
    """(K, D, D) covariances whatever the mixture's covariance_type."""
    k, d = gmm.means_.shape
    cov = gmm.covariances_
    if gmm.covariance_type == "full":
        return cov
    if gmm.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if gmm.covariance_type == "diag":
        return cov[:, :, None] * np.eye(d)
    return cov[:, None, None] * np.eye(d)  # spherical


def sample_latent_gmm(gmm: GaussianMixture, n: int, seed: int) -> np.ndarray:
    """n codes (n, latent_dim) float64 drawn from a fitted mixture with its own generator
    seeded by `seed` (the mixture's state is untouched); rows in random order, not grouped by
    component as GaussianMixture.sample returns them."""
    rng = np.random.default_rng(seed)
    component = rng.choice(len(gmm.weights_), size=n, p=gmm.weights_ / gmm.weights_.sum())
    chol = np.linalg.cholesky(_full_covariances(gmm))
    eps = rng.standard_normal((n, gmm.means_.shape[1]))
    return gmm.means_[component] + np.einsum("nij,nj->ni", chol[component], eps)
