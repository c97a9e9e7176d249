"""Metrics: pure scores on arrays, and model-level estimates on a linear-Gaussian model
whose exact log-likelihood is known."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vaebench import data, metrics


@dataclass
class LossRecord:
    """Same fields as vaebench.models.base.LossRecord; local so these tests do not import
    the models package."""

    loss: Tensor
    recon: Tensor
    kl: Tensor | None = None
    elbo: Tensor | None = None


class LinearGaussian(nn.Module):
    """Probabilistic PCA fulfilling the model contract, in float64.

    p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) with W's columns orthogonal, so the true
    posterior is a diagonal Gaussian: the encoder is that exact posterior, optionally
    shifted / widened to make it approximate.
    """

    def __init__(self, input_shape=(1, 4, 4), latent_dim=3, noise_std=0.5, variational=True,
                 shift=0.0, var_scale=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dim = math.prod(input_shape)
        basis, _ = torch.linalg.qr(torch.randn(dim, latent_dim, generator=g, dtype=torch.float64))
        scales = torch.linspace(2.0, 1.0, latent_dim, dtype=torch.float64)
        precision = scales**2 + noise_std**2  # diagonal of W^T W + s^2 I
        self.weight = nn.Parameter(basis * scales)
        self.bias = nn.Parameter(0.1 * torch.randn(dim, generator=g, dtype=torch.float64))
        self.enc_weight = nn.Parameter(self.weight.detach().T / precision[:, None])
        self.enc_logvar = nn.Parameter(torch.log(noise_std**2 * var_scale / precision))
        self.shift, self.noise_std = shift, noise_std
        self.input_shape, self.latent_dim, self.is_variational = tuple(input_shape), latent_dim, variational
        # Gaussian posterior via encode, N(0, I) prior and decode + nll: the contract's default form
        self.capabilities = frozenset({"elbo", "posterior", "prior", "likelihood", "sample", "codes"}
                                      if variational else {"codes"})

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = (x.flatten(1).double() - self.bias) @ self.enc_weight.T + self.shift
        return mu, self.enc_logvar.expand_as(mu)

    def decode(self, z: Tensor) -> Tensor:
        return (z @ self.weight.T + self.bias).view(-1, *self.input_shape)

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        err = ((x.double() - params) / self.noise_std).flatten(1)
        return 0.5 * (err**2 + math.log(2 * math.pi * self.noise_std**2)).sum(1)

    def loss(self, x: Tensor, kl_weight: float = 1.0, generator: torch.Generator | None = None) -> LossRecord:
        mu, logvar = self.encode(x)
        if not self.is_variational:
            recon = self.nll(self.decode(mu), x)
            return LossRecord(loss=recon.mean(), recon=recon)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        recon = self.nll(self.decode(mu + torch.exp(0.5 * logvar) * eps), x)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1)
        return LossRecord(loss=(recon + kl_weight * kl).mean(), recon=recon, kl=kl, elbo=-(recon + kl))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)
        return self.decode(z) + self.noise_std * torch.randn(n, *self.input_shape, generator=generator, dtype=torch.float64)

    def log_marginal(self, x: Tensor) -> Tensor:
        """Analytic log p(x) = log N(x; b, W W^T + s^2 I)."""
        cov = self.weight @ self.weight.T + self.noise_std**2 * torch.eye(len(self.bias), dtype=torch.float64)
        return MultivariateNormal(self.bias, cov).log_prob(x.flatten(1).double()).detach()


def model_data(model: LinearGaussian, n: int = 300) -> Tensor:
    with torch.no_grad():
        return model.sample(n, torch.Generator().manual_seed(1))


# --- pure metrics -----------------------------------------------------------------------------


def test_cluster_accuracy_ignores_cluster_ids():
    labels = np.repeat(np.arange(4), 5)
    assert metrics.cluster_accuracy(labels, np.array([2, 0, 3, 1])[labels]) == 1.0
    assert metrics.cluster_accuracy(labels, labels + 10) == 1.0


def test_cluster_accuracy_small_case():
    # cluster 1 -> label 0 gets 2 right, cluster 0 -> label 1 gets 3 right: 5 of 6
    assert metrics.cluster_accuracy(np.array([0, 0, 0, 1, 1, 1]), np.array([1, 1, 0, 0, 0, 0])) == pytest.approx(5 / 6)


def blobs(n=600, seed=0):
    return make_blobs(n_samples=n, centers=4, n_features=5, cluster_std=0.5, center_box=(-20, 20), random_state=seed)


def noise(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 10, n)


def test_clustering_scores_on_separated_blobs():
    latents, labels = blobs()
    scores = metrics.clustering_scores(latents, labels)
    assert set(scores) == {"nmi", "ari", "cluster_acc", "silhouette"}
    assert min(scores["nmi"], scores["ari"], scores["cluster_acc"]) > 0.95
    assert scores["silhouette"] > 0.5


def test_clustering_scores_on_noise_are_near_zero():
    latents, labels = noise()
    scores = metrics.clustering_scores(latents, labels)
    assert scores["nmi"] < 0.05 and abs(scores["ari"]) < 0.05
    assert abs(scores["silhouette"]) < 0.1


def test_silhouette_subsample_is_seeded_and_undefined_for_one_label():
    latents, labels = blobs(n=900)
    a = metrics.label_silhouette(latents, labels, seed=0, max_points=200)
    assert a == metrics.label_silhouette(latents, labels, seed=0, max_points=200)
    assert a == pytest.approx(metrics.label_silhouette(latents, labels), abs=0.05)
    assert math.isnan(metrics.clustering_scores(latents, np.zeros(900, dtype=int), n_clusters=3)["silhouette"])


def test_probe_accuracy_separable_vs_noise():
    latents, labels = blobs()
    assert metrics.probe_accuracy(latents[:400], labels[:400], latents[400:], labels[400:]) > 0.95
    latents, labels = noise()
    assert metrics.probe_accuracy(latents[:1500], labels[:1500], latents[1500:], labels[1500:]) < 0.2


# --- model-level helpers ------------------------------------------------------------------------


def test_posterior_means_match_encoder_and_restore_mode():
    model = LinearGaussian().train()
    x = model_data(model, 50)
    means = metrics.posterior_means(model, x, batch_size=7)
    assert means.shape == (50, 3)
    np.testing.assert_allclose(means, model.encode(x)[0].detach().numpy())
    assert model.training
    metrics.posterior_means(model.eval(), x)
    assert not model.training


def test_elbo_terms_are_seeded_and_absent_without_posterior():
    model = LinearGaussian()
    x = model_data(model, 40)
    a, b = metrics.elbo_terms(model, x, seed=0), metrics.elbo_terms(model, x, seed=0)
    assert set(a) == {"recon", "kl", "elbo"} and all(v.shape == (40,) for v in a.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["recon"], metrics.elbo_terms(model, x, seed=1)["recon"])
    assert set(metrics.elbo_terms(LinearGaussian(variational=False), x)) == {"recon"}


def test_iwae_is_exact_with_the_true_posterior_even_at_k1():
    model = LinearGaussian()
    x = model_data(model)
    exact = model.log_marginal(x)
    for k in (1, 5):
        torch.testing.assert_close(metrics.iwae_log_likelihood(model, x, k), exact, rtol=0, atol=1e-8)


def test_iwae_tightens_with_k_and_converges_to_log_marginal():
    model = LinearGaussian(shift=0.3, var_scale=1.8)
    x = model_data(model)
    exact = model.log_marginal(x).mean().item()
    means = [metrics.iwae_log_likelihood(model, x, k).mean().item() for k in (1, 10, 100, 1000)]
    assert means == sorted(means)
    assert exact - means[0] > 0.1  # the approximate posterior really is loose at k=1
    assert means[-1] == pytest.approx(exact, abs=0.02)


def test_elbo_equals_iwae1_in_expectation():
    model = LinearGaussian(shift=0.3, var_scale=1.8)
    x = model_data(model, 2000)
    elbo = metrics.elbo_terms(model, x)["elbo"]
    iwae1 = metrics.iwae_log_likelihood(model, x, 1).numpy()
    diff = iwae1 - elbo  # zero mean for every example: the same bound, independent noise
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
    assert elbo.mean() < metrics.iwae_log_likelihood(model, x, 10).mean().item()


def test_iwae_does_not_depend_on_batching_or_sample_chunks():
    model = LinearGaussian(shift=0.3, var_scale=1.8)
    x = model_data(model, 50)
    reference = metrics.iwae_log_likelihood(model, x, 100, batch_size=1000, seed=3)
    torch.testing.assert_close(metrics.iwae_log_likelihood(model, x, 100, batch_size=7, seed=3), reference)
    torch.testing.assert_close(metrics.iwae_log_likelihood(model, x, 100, sample_chunk=7, seed=3), reference)
    assert reference.dtype == torch.float64 and reference.shape == (50,)
    assert not torch.equal(metrics.iwae_log_likelihood(model, x, 100, seed=4), reference)


def test_kl_per_dim_sums_to_the_mean_kl():
    model = LinearGaussian(shift=0.3, var_scale=1.8)
    x = model_data(model, 60)
    per_dim = metrics.kl_per_dim(model, x, batch_size=7)
    assert per_dim.shape == (3,) and per_dim.dtype == np.float64 and (per_dim > 0).all()
    assert per_dim.sum() == pytest.approx(metrics.elbo_terms(model, x)["kl"].mean(), rel=1e-12)
    with pytest.raises(ValueError):
        metrics.kl_per_dim(LinearGaussian(variational=False), x)


def test_active_units_counts_dims_whose_mean_varies():
    model = LinearGaussian(latent_dim=3)
    with torch.no_grad():
        model.enc_weight[1:] *= 0.01  # means of dims 1, 2 now vary ~1e-4 across x: inactive
    x = model_data(model, 200)
    assert metrics.active_units(model, x, batch_size=16) == 1
    assert metrics.active_units(model, x, threshold=0.0) == 3


def test_iwae_needs_a_posterior_and_k_at_least_1():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError):
        metrics.iwae_log_likelihood(LinearGaussian(variational=False), x, 10)
    with pytest.raises(ValueError):
        metrics.iwae_log_likelihood(LinearGaussian(), x, 0)


# --- evaluate ---------------------------------------------------------------------------------

LATENT_KEYS = {"nmi", "ari", "cluster_acc", "silhouette", "probe_acc"}


def keys(split: str, names: set[str]) -> set[str]:
    return {f"{split}_{name}" for name in names} | {"eval_samples_per_s"}


def test_evaluate_key_set_for_a_vae():
    ds = data.load("digits")
    model = LinearGaussian(input_shape=ds.input_shape, latent_dim=4).train()
    scores = metrics.evaluate(model, ds, split="val", iwae_k=5)
    assert set(scores) == keys("val", LATENT_KEYS | {"recon", "kl", "elbo", "iwae_ll", "active_units"})
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["val_elbo"] == pytest.approx(-(scores["val_recon"] + scores["val_kl"]))
    assert scores["val_elbo"] <= scores["val_iwae_ll"] + 1.0
    assert model.training
    assert set(metrics.evaluate(model, ds)) == keys("test", LATENT_KEYS | {"recon", "kl", "elbo", "active_units"})
    assert scores["val_active_units"] == 4.0  # the exact PPCA posterior: every mean varies


def test_an_autoencoder_gets_nan_not_zero_where_it_lacks_a_posterior_and_says_why():
    ds = data.load("digits")
    model = LinearGaussian(input_shape=ds.input_shape, latent_dim=4, variational=False)
    scores = metrics.evaluate(model, ds, iwae_k=5)
    lacking = {"test_elbo", "test_kl", "test_iwae_ll", "test_active_units"}
    assert set(scores) == keys("test", LATENT_KEYS | {"recon"}) | lacking
    assert all(math.isnan(scores[k]) for k in lacking)
    assert all(math.isfinite(v) for k, v in scores.items() if k not in lacking)
    assert metrics.skipped(model, "test", iwae_k=5) == {
        "test_elbo": "skipped: no elbo", "test_kl": "skipped: no elbo",
        "test_iwae_ll": "skipped: no posterior, prior, likelihood", "test_active_units": "skipped: no posterior"}
    assert metrics.skipped(LinearGaussian(input_shape=ds.input_shape, latent_dim=4), "test", iwae_k=5) == {}


def test_a_model_without_codes_gets_nan_latent_scores():
    ds = data.load("digits")
    model = LinearGaussian(input_shape=ds.input_shape, latent_dim=4)
    model.capabilities = frozenset({"elbo"})
    scores = metrics.evaluate(model, ds)
    assert math.isfinite(scores["test_elbo"]) and math.isfinite(scores["test_kl"])
    assert all(math.isnan(scores[f"test_{k}"]) for k in LATENT_KEYS if k != "eval_samples_per_s")
    assert metrics.skipped(model)["test_nmi"] == "skipped: no codes"


def test_iwae_from_distributions_agrees_with_the_gaussian_path():
    """A model that gives its posterior, prior and likelihood as torch distributions (any
    model, here the same linear Gaussian with a shifted, so approximate, posterior) gets the
    same bound, up to Monte Carlo noise, as the per-example-noise Gaussian path."""
    from torch.distributions import Independent, Normal

    ds = data.load("digits")
    gaussian = LinearGaussian(input_shape=ds.input_shape, latent_dim=4, shift=0.3)

    class Distributional(LinearGaussian):
        def posterior(self, x):
            mu, logvar = self.encode(x)
            return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)

        def prior(self):
            zero = torch.zeros(self.latent_dim, dtype=torch.float64)
            return Independent(Normal(zero, torch.ones_like(zero)), 1)

        def log_likelihood(self, x, z):
            lead = z.shape[:-2]
            params = self.decode(z.reshape(-1, z.shape[-1]))
            xs = x.expand(*lead, *x.shape).reshape(-1, *x.shape[1:])
            return -self.nll(params, xs).view(*lead, x.shape[0])

    other = Distributional(input_shape=ds.input_shape, latent_dim=4, shift=0.3)
    other.load_state_dict(gaussian.state_dict())
    x = ds.test.x[:64]
    assert not metrics.likelihood.gaussian_standard(other)
    a = metrics.iwae_log_likelihood(gaussian, x, 2000, seed=1)
    b = metrics.iwae_log_likelihood(other, x, 2000, seed=1)
    truth = gaussian.log_marginal(x).mean()
    assert (a - b).abs().max() > 1e-6  # different noise: really the other path
    assert abs(float(a.mean() - truth)) < 0.03 and abs(float(b.mean() - truth)) < 0.03


def test_evaluate_is_deterministic():
    ds = data.load("digits")
    model = LinearGaussian(input_shape=ds.input_shape, latent_dim=4)
    a, b = metrics.evaluate(model, ds, seed=2), metrics.evaluate(model, ds, seed=2)
    a.pop("eval_samples_per_s"), b.pop("eval_samples_per_s")
    assert a == b
