"""Disentanglement against ground-truth factors: MIG (Chen et al. 2018) and DCI (Eastwood &
Williams 2018), pure functions over (codes, factors) arrays."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import entropy
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.metrics import (
    mutual_info_score,
)

if TYPE_CHECKING:
    pass
DISENTANGLEMENT_SCORES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness")
DISENTANGLEMENT_POINTS = 4000  # MIG/DCI on at most this many codes (a seeded subsample)


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
