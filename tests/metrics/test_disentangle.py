"""Latent-structure metrics on constructed codes whose answer is known: active units, MIG
(Chen et al. 2018) and DCI (Eastwood & Williams 2018), and their place in evaluate()."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from vaebench import data, metrics
from vaebench.models import LossRecord

N = 2000
SIZES = (3, 6, 10, 8, 12)  # factor cardinalities, all <= 20 bins so identity codes bin exactly


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, k, N) for k in SIZES], axis=1)


def identity_codes(factors: np.ndarray, seed: int = 1) -> np.ndarray:
    """Each factor in its own code dim, with a little noise (no exact ties)."""
    return factors + 0.01 * np.random.default_rng(seed).normal(size=factors.shape)


def scores(codes: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    return {"mig": metrics.mig(codes, factors), **metrics.dci(codes, factors)}


# --- active units -------------------------------------------------------------------------------


def test_active_units_from_means_exact_count():
    rng = np.random.default_rng(0)
    means = np.hstack([
        rng.normal(size=(500, 3)),                 # var ~1: active
        0.05 * rng.normal(size=(500, 2)),          # var ~0.0025: inactive
        np.full((500, 1), 3.0),                    # constant: inactive
    ])
    assert metrics.active_units_from_means(means) == 3
    assert metrics.active_units_from_means(means, threshold=1e-4) == 5
    assert metrics.active_units_from_means(np.zeros((10, 4))) == 0


# --- MIG ----------------------------------------------------------------------------------------


def test_discretize_uses_equal_width_bins_per_column():
    codes = np.array([[0.0, 5.0], [0.49, 5.0], [0.51, 5.0], [1.0, 5.0]])
    binned = metrics.discretize(codes, n_bins=2)
    np.testing.assert_array_equal(binned[:, 0], [0, 0, 1, 1])
    assert np.unique(binned[:, 1]).size == 1  # a constant column is one bin
    assert metrics.discretize(np.random.default_rng(0).normal(size=(100, 3)), 20).max() == 19


def test_mig_identity_is_one_constant_and_noise_are_zero(factors):
    assert metrics.mig(identity_codes(factors), factors) == pytest.approx(1.0, abs=0.02)
    assert metrics.mig(np.zeros((N, 5)), factors) == 0.0
    assert metrics.mig(np.random.default_rng(2).normal(size=(N, 5)), factors) < 0.02


def test_mig_of_duplicated_latents_is_zero(factors):
    """Each factor copied into two dims: the gap between the two copies is exactly 0."""
    codes = np.repeat(identity_codes(factors), 2, axis=1)
    assert metrics.mig(codes, factors) == pytest.approx(0.0, abs=1e-12)


def test_mig_normalises_by_factor_entropy_and_skips_constant_factors():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 4, size=(1000, 1))
    half = f // 2  # a code that keeps 1 of the 2 bits of a uniform 4-valued factor
    assert metrics.mig(half.astype(float), f) == pytest.approx(0.5, abs=0.02)
    with_constant = np.hstack([f, np.zeros_like(f)])
    assert metrics.mig(f.astype(float), with_constant) == pytest.approx(1.0)
    assert math.isnan(metrics.mig(f.astype(float), np.zeros_like(f)))


# --- DCI ----------------------------------------------------------------------------------------


def test_dci_from_importance_closed_forms():
    assert metrics.dci_from_importance(np.eye(4)) == pytest.approx((1.0, 1.0))
    assert metrics.dci_from_importance(np.ones((4, 4))) == pytest.approx((0.0, 0.0))
    assert metrics.dci_from_importance(np.zeros((3, 2))) == (0.0, 0.0)
    # two copies of each of 3 factors among 6 latents: rows pure, each column split in two
    d, c = metrics.dci_from_importance(np.repeat(np.eye(3), 2, axis=0))
    assert d == pytest.approx(1.0) and c == pytest.approx(1.0 - math.log(2) / math.log(6))
    # an unused latent (zero row) weighs nothing in disentanglement
    assert metrics.dci_from_importance(np.vstack([np.eye(2), [0.0, 0.0]]))[0] == pytest.approx(1.0)


def test_dci_identity_is_near_one(factors):
    s = metrics.dci(identity_codes(factors), factors)
    assert set(s) == {"disentanglement", "completeness", "informativeness"}
    assert min(s.values()) > 0.95


def test_dci_constant_code_is_zero_and_informativeness_is_chance(factors):
    s = metrics.dci(np.zeros((N, 5)), factors)
    assert s["disentanglement"] == 0.0 and s["completeness"] == 0.0
    majority = np.mean([np.bincount(f).max() / N for f in factors.T])
    assert s["informativeness"] == pytest.approx(majority, abs=0.05)


def test_dci_duplicated_latents_keep_disentanglement_but_lose_completeness(factors):
    s = metrics.dci(np.repeat(identity_codes(factors), 2, axis=1), factors)
    assert s["disentanglement"] > 0.95
    assert s["completeness"] == pytest.approx(1.0 - math.log(2) / math.log(10), abs=0.05)  # ~0.70
    assert s["informativeness"] > 0.95


def test_mixing_the_factors_lowers_every_disentanglement_score(factors):
    identity = scores(identity_codes(factors), factors)
    standardised = (factors - factors.mean(0)) / factors.std(0)
    mixed = scores(standardised @ ortho_group.rvs(5, random_state=0), factors)
    for name in ("mig", "disentanglement", "completeness"):
        assert mixed[name] < 0.5 < identity[name], name


def test_dci_is_seeded_and_checks_its_inputs(factors):
    codes = identity_codes(factors) + np.random.default_rng(3).normal(size=factors.shape)
    assert metrics.dci(codes, factors, seed=4) == metrics.dci(codes, factors, seed=4)
    with pytest.raises(ValueError, match="same N"):
        metrics.dci(codes[:10], factors)
    with pytest.raises(ValueError, match="integer"):
        metrics.mig(codes, factors.astype(float))


# --- evaluate() on a dataset with factors -------------------------------------------------------


class FactorEncoder(torch.nn.Module):
    """A 'model' whose posterior mean reads the two factors straight off the pixels."""

    capabilities = frozenset({"elbo", "posterior", "codes"})

    def encode(self, x):
        mu = x.flatten(1)[:, :2].double() * 4
        return mu, torch.zeros_like(mu)

    def codes(self, x):
        return self.encode(x)[0]

    def loss(self, x, kl_weight=1.0, generator=None):
        kl = 0.5 * self.encode(x)[0].pow(2).sum(1)
        recon = torch.zeros_like(kl)
        return LossRecord(loss=kl.mean(), recon=recon, kl=kl, elbo=-kl)


def test_evaluate_adds_disentanglement_scores_when_factors_are_known(monkeypatch):

    @data.register("toy_factors_eval")
    def toy(data_dir):
        f = np.random.default_rng(0).integers(0, 5, size=(600, 2))
        x = np.zeros((600, 1, 2, 2))
        x[:, 0, 0, :] = f / 4.0
        return data.RawData(x=x, y=f[:, 0], factors=f, factor_names=("a", "b"))

    ds = data.load("toy_factors_eval")
    model = FactorEncoder()
    first = metrics.evaluate(model, ds, disentanglement_points=100)
    again = metrics.evaluate(model, ds, disentanglement_points=100)
    assert {f"test_{name}" for name in metrics.DISENTANGLEMENT_SCORES} <= set(first)
    assert first["test_mig"] > 0.9 and first["test_dci_disentanglement"] > 0.9
    assert first["test_active_units"] == 2.0
    assert {k: v for k, v in first.items() if k.startswith("test_")} == {k: v for k, v in again.items() if k.startswith("test_")}
    without = dataclasses.replace(ds, test=data.Split(x=ds.test.x, y=ds.test.y))
    assert not set(metrics.evaluate(model, without)) & {f"test_{n}" for n in metrics.DISENTANGLEMENT_SCORES}
