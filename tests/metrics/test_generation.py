"""Generation scores over feature arrays, on cases with known answers: the Fréchet distance
against its closed forms, precision/recall on identical, disjoint and mode-dropping sets, the
class histogram's KL against scipy, and the seeded Gaussian-mixture sampler."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import entropy, special_ortho_group

from vaebench.metrics import generation as gen
from vaebench.metrics.generation import GaussianStats


def exact_sample(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean and (unbiased) covariance are exactly `mean` and `cov`, up
    to rounding: whitened Gaussian noise, recoloured."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    w, v = np.linalg.eigh(cov)
    return z @ (v * np.sqrt(np.clip(w, 0, None))) @ v.T + mean


def reference_fd(mu_a: np.ndarray, a: np.ndarray, mu_b: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root of the product."""
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(a) + np.trace(b) - 2 * np.trace(scipy.linalg.sqrtm(a @ b)).real)


@pytest.mark.parametrize("d", [1, 5, 64])
def test_diagonal_covariances_match_the_closed_form(d: int) -> None:
    rng = np.random.default_rng(d)
    mu_a, mu_b = rng.normal(0, 2, d), rng.normal(0, 2, d)
    var_a, var_b = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    closed = np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2) + np.sum((mu_a - mu_b) ** 2)
    stats = gen.frechet_distance_from_stats(GaussianStats(mu_a, np.diag(var_a), 0), GaussianStats(mu_b, np.diag(var_b), 0))
    assert stats == pytest.approx(closed, rel=1e-10)
    arrays = gen.frechet_distance(exact_sample(mu_a, np.diag(var_a), 500, 1), exact_sample(mu_b, np.diag(var_b), 700, 2))
    assert arrays == pytest.approx(closed, rel=1e-8)


def test_commuting_covariances_match_the_closed_form() -> None:
    """A = Q diag(a) Q', B = Q diag(b) Q' share eigenvectors: the distance is that of the diagonals."""
    d = 16
    rng = np.random.default_rng(3)
    q = special_ortho_group.rvs(d, random_state=4)
    a, b = rng.uniform(0.05, 3, d), rng.uniform(0.05, 3, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    closed = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu_a - mu_b) ** 2)
    cov_a, cov_b = (q * a) @ q.T, (q * b) @ q.T
    got = gen.frechet_distance(exact_sample(mu_a, cov_a, 400, 5), exact_sample(mu_b, cov_b, 400, 6))
    assert got == pytest.approx(closed, rel=1e-8)


def test_general_covariances_agree_with_scipy_sqrtm() -> None:
    rng = np.random.default_rng(7)
    d = 12
    m_a, m_b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov_a, cov_b = m_a @ m_a.T / d + 0.1 * np.eye(d), m_b @ m_b.T / d + 0.1 * np.eye(d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    got = gen.frechet_distance_from_stats(GaussianStats(mu_a, cov_a, 0), GaussianStats(mu_b, cov_b, 0))
    assert got == pytest.approx(reference_fd(mu_a, cov_a, mu_b, cov_b), rel=1e-9)


def test_singular_covariances_need_no_regularisation() -> None:
    """Dead features (zero variance) make the covariances singular: still the closed form, real."""
    var_a, var_b = np.array([0.0, 1.0, 4.0, 0.0]), np.array([0.0, 0.25, 4.0, 9.0])
    mu = np.zeros(4)
    a, b = exact_sample(mu, np.diag(var_a), 300, 8), exact_sample(mu, np.diag(var_b), 300, 9)
    assert np.linalg.matrix_rank(np.cov(a, rowvar=False)) == 2
    got = gen.frechet_distance(a, b)
    assert got == pytest.approx(np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2), rel=1e-8)
    assert isinstance(got, float)


def test_identical_symmetric_and_row_order_invariant() -> None:
    rng = np.random.default_rng(10)
    a = rng.normal(size=(2000, 32)) @ rng.normal(size=(32, 32)) + 3
    b = np.exp(rng.normal(size=(1500, 32)) / 2)  # not Gaussian
    scale = np.trace(np.cov(a, rowvar=False))
    assert gen.frechet_distance(a, a) == pytest.approx(0, abs=1e-9 * scale)
    assert gen.frechet_distance(a, a[rng.permutation(len(a))]) == pytest.approx(0, abs=1e-9 * scale)
    ab = gen.frechet_distance(a, b)
    assert ab > 1
    assert gen.frechet_distance(b, a) == pytest.approx(ab, rel=1e-10)
    assert gen.frechet_distance(a[::-1], b[rng.permutation(len(b))]) == pytest.approx(ab, rel=1e-10)


def test_distance_grows_with_the_shift_of_the_mean() -> None:
    a = np.random.default_rng(11).normal(size=(1000, 8))
    shifts = [gen.frechet_distance(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * s**2 for s in (0.5, 1.0, 2.0)], rel=1e-9)


@pytest.mark.parametrize("bad, message", [
    (np.ones((1, 4)), "N >= 2"), (np.ones(10), "N >= 2"), (np.full((5, 4), np.nan), "NaN"),
])
def test_unusable_features_raise(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gen.frechet_distance(bad, np.ones((5, 4)))


def test_feature_dimensions_must_agree() -> None:
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="dimensions differ"):
        gen.frechet_distance(rng.normal(size=(10, 3)), rng.normal(size=(10, 4)))
    with pytest.raises(ValueError, match="dimensions differ"):
        gen.precision_recall(rng.normal(size=(10, 3)), rng.normal(size=(10, 4)))


def test_a_covariance_that_is_not_psd_is_an_error() -> None:
    bad = GaussianStats(np.zeros(2), np.diag([1.0, -1.0]), 0)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        gen.frechet_distance_from_stats(bad, GaussianStats(np.zeros(2), np.eye(2), 0))


# -- precision, recall, density, coverage -------------------------------------------------------

def test_identical_sets_have_full_precision_recall_and_coverage() -> None:
    x = np.random.default_rng(13).normal(size=(800, 16))
    scores = gen.precision_recall(x, x.copy())
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (1.0, 1.0, 1.0)
    assert scores["density"] >= 1.0 / 3  # each point at least in its own ball: 1/k


def test_disjoint_far_apart_sets_score_zero() -> None:
    rng = np.random.default_rng(14)
    real, fake = rng.normal(size=(500, 16)), rng.normal(size=(400, 16)) + 100
    assert gen.precision_recall(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_dropping_a_mode_keeps_precision_and_halves_recall() -> None:
    """Real: two far clusters of equal size; fake: the same distribution as one cluster. The
    far cluster's balls hold no fake point and change no radius of the near one: precision is
    that against the near cluster alone, recall and coverage exactly half of theirs."""
    rng = np.random.default_rng(15)
    near = rng.normal(size=(1000, 8))
    real = np.concatenate([near, rng.normal(size=(1000, 8)) + 50])
    fake = rng.normal(size=(1000, 8))
    alone, dropped = gen.precision_recall(near, fake), gen.precision_recall(real, fake)
    assert alone["precision"] > 0.8 and alone["recall"] > 0.8 and alone["coverage"] > 0.8
    assert dropped["precision"] == alone["precision"] and dropped["density"] == pytest.approx(alone["density"])
    assert dropped["recall"] == alone["recall"] / 2 and dropped["coverage"] == alone["coverage"] / 2
    swapped = gen.precision_recall(fake, real)  # the roles swap: precision halves
    assert swapped["precision"] == pytest.approx(gen.precision_recall(fake, near)["precision"] / 2)


def test_larger_neighbourhoods_never_lower_precision_or_recall() -> None:
    rng = np.random.default_rng(16)
    real, fake = rng.normal(size=(600, 10)), rng.normal(0.5, 1.3, size=(500, 10))
    by_k = [gen.precision_recall(real, fake, k=k) for k in (1, 3, 10)]
    for key in ("precision", "recall", "coverage"):
        values = [s[key] for s in by_k]
        assert values == sorted(values) and 0 < values[0] < 1


def test_reference_radii_computed_once_give_the_same_scores() -> None:
    rng = np.random.default_rng(12)
    real, fake = rng.normal(size=(300, 8)), rng.normal(0.3, 1.2, size=(250, 8))
    radii = gen.knn_radii(real, 3)
    assert radii.shape == (300,) and (radii > 0).all()
    assert gen.precision_recall(real, fake, 3, real_radii=radii) == gen.precision_recall(real, fake, 3)
    with pytest.raises(ValueError, match="real_radii"):
        gen.precision_recall(real, fake, 3, real_radii=radii[:10])


def test_row_order_does_not_matter_and_k_needs_points() -> None:
    rng = np.random.default_rng(17)
    real, fake = rng.normal(size=(300, 6)), rng.normal(0.3, 1, size=(200, 6))
    assert gen.precision_recall(real, fake) == gen.precision_recall(real[::-1], fake[rng.permutation(200)])
    with pytest.raises(ValueError, match="k = 3"):
        gen.precision_recall(real, fake[:3])


# -- class histogram -----------------------------------------------------------------------------

def test_identical_class_histograms_have_zero_kl_and_cover_every_class() -> None:
    labels = np.random.default_rng(18).integers(0, 10, 5000)
    assert gen.class_scores(labels, labels) == {"classes_covered": 10.0, "class_kl": 0.0}
    assert gen.class_scores(labels[::-1].copy(), labels)["class_kl"] == 0.0  # same counts, any order
    assert gen.class_scores(np.tile(labels, 2), labels)["class_kl"] < 1e-6  # same shares, other n


def test_class_kl_is_the_smoothed_kl_of_the_histograms() -> None:
    rng = np.random.default_rng(19)
    reference = rng.integers(0, 10, 10_000)
    samples = np.concatenate([np.full(8000, 3), rng.integers(0, 10, 2000)])  # collapsing on a 3
    p = (np.bincount(samples, minlength=10) + gen.KL_SMOOTHING) / (len(samples) + 10 * gen.KL_SMOOTHING)
    q = (np.bincount(reference, minlength=10) + gen.KL_SMOOTHING) / (len(reference) + 10 * gen.KL_SMOOTHING)
    scores = gen.class_scores(samples, reference)
    assert scores["class_kl"] == pytest.approx(entropy(p, q), rel=1e-12)
    assert scores["classes_covered"] == 10  # each class still has ~20% of its share


def test_a_collapsed_generator_covers_one_class() -> None:
    reference = np.arange(10_000) % 10
    scores = gen.class_scores(np.full(10_000, 7), reference)
    assert scores["classes_covered"] == 1
    assert np.log(10) - 0.01 < scores["class_kl"] < np.log(10)  # all mass on 1 of 10 uniform classes
    partial = gen.class_scores(np.concatenate([np.full(100, 0), np.full(9900, 1)]), reference)
    assert partial["classes_covered"] == 1  # 1% of the samples on class 0: under 10% of its 10% share


def test_class_labels_are_checked() -> None:
    with pytest.raises(ValueError, match="outside"):
        gen.class_scores(np.array([0, 10]), np.array([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        gen.class_histogram(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        gen.class_scores(np.array([], dtype=int), np.array([0, 1]))


# -- the ex-post latent density ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def clustered_codes() -> np.ndarray:
    """Three well-separated clusters of 2-d codes, with shares 0.5, 0.3 and 0.2."""
    rng = np.random.default_rng(20)
    centres, sizes = np.array([[0, 0], [10, 0], [0, 10]]), [1000, 600, 400]
    return np.concatenate([rng.normal(c, [1.0, 0.5], size=(n, 2)) for c, n in zip(centres, sizes)])


def test_gmm_sampler_is_deterministic_for_a_seed(clustered_codes: np.ndarray) -> None:
    gmm = gen.fit_latent_gmm(clustered_codes, n_components=3, seed=0)
    again = gen.fit_latent_gmm(clustered_codes, n_components=3, seed=0)
    assert np.array_equal(gmm.means_, again.means_) and np.array_equal(gmm.covariances_, again.covariances_)
    first = gen.sample_latent_gmm(gmm, 500, seed=1)
    assert first.shape == (500, 2) and first.dtype == np.float64
    assert np.array_equal(first, gen.sample_latent_gmm(again, 500, seed=1))
    assert not np.allclose(first, gen.sample_latent_gmm(gmm, 500, seed=2))


def test_gmm_samples_follow_the_fitted_mixture(clustered_codes: np.ndarray) -> None:
    gmm = gen.fit_latent_gmm(clustered_codes, n_components=3, seed=0)
    assert gmm.converged_
    z = gen.sample_latent_gmm(gmm, 20_000, seed=0)
    cluster = np.where(z[:, 0] > 5, 1, np.where(z[:, 1] > 5, 2, 0))
    assert np.bincount(cluster) / len(z) == pytest.approx([0.5, 0.3, 0.2], abs=0.015)
    assert set(cluster[:30]) == {0, 1, 2}  # rows are not grouped by component
    assert gen.frechet_distance(z, clustered_codes) < 0.05


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_sampler_reproduces_each_covariance_type(covariance_type: str) -> None:
    codes = np.random.default_rng(21).normal(size=(3000, 3)) * [1.0, 2.0, 0.5] + [1, -1, 0]
    gmm = gen.fit_latent_gmm(codes, n_components=1, seed=0, covariance_type=covariance_type)
    z = gen.sample_latent_gmm(gmm, 40_000, seed=0)
    cov = gmm.covariances_ if covariance_type == "tied" else gmm.covariances_[0]
    expected = np.diag(cov) if covariance_type == "diag" else cov * np.eye(3) if covariance_type == "spherical" else cov
    assert np.cov(z, rowvar=False) == pytest.approx(expected, abs=0.06)
    assert z.mean(0) == pytest.approx(gmm.means_[0], abs=0.03)


def test_gmm_needs_as_many_codes_as_components() -> None:
    with pytest.raises(ValueError, match="10 components"):
        gen.fit_latent_gmm(np.random.default_rng(22).normal(size=(5, 2)))
