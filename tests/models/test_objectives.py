"""The literature's objectives: β-TCVAE, capacity-annealed β-VAE and IWAE.

Each optimises its own loss but reports the same true ELBO terms as `vae` for the same
noise; the checks below pin each loss to its definition and its known limits.
"""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from vaebench import models
from vaebench.config import ModelSpec
from vaebench.models import objectives

VARIATIONAL = ["vae", "beta_vae", "beta_tcvae", "annealed_vae", "iwae"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(objective: str = "vae", **hparams) -> models.VAEModel:
    """A small float64 MLP VAE; every call starts from the same weights."""
    torch.manual_seed(0)
    return models.build(arch="mlp", objective=objective, latent_dim=3, likelihood="bernoulli",
                        input_shape=(1, 4, 4), hidden=(16,), **hparams).double()


def batch(n: int = 32, seed: int = 3) -> torch.Tensor:
    return (torch.rand(n, 1, 4, 4, generator=gen(seed)) > 0.5).double()


def mean_loss(m: models.VAEModel, x: torch.Tensor, draws: int) -> tuple[float, float]:
    """Mean and standard error of the loss over `draws` independent noise draws."""
    with torch.no_grad():
        losses = torch.stack([m.loss(x, generator=gen(100 + i)).loss for i in range(draws)])
    return losses.mean().item(), losses.std().item() / math.sqrt(draws)


@pytest.mark.parametrize("objective", VARIATIONAL)
def test_record_shapes_and_the_same_elbo_as_vae(objective):
    x = batch(21)  # 21 x 3 noise values: not a multiple of torch's 16-value sampling blocks
    reference = model("vae").loss(x, generator=gen(7))
    record = model(objective).loss(x, generator=gen(7))
    assert record.loss.dim() == 0 and torch.isfinite(record.loss)
    assert record.recon.shape == record.kl.shape == record.elbo.shape == (21,)
    assert torch.equal(record.elbo, -(record.recon + record.kl))
    for name in ("recon", "kl", "elbo"):  # same weights, same generator: the same ELBO terms
        # (to rounding: iwae decodes its k samples as one batch of k * B, blocked differently)
        torch.testing.assert_close(getattr(record, name), getattr(reference, name), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("objective", ["beta_tcvae", "annealed_vae", "iwae"])
def test_gradients_are_those_of_the_loss_nothing_detached(objective):
    """Autograd agrees with a finite difference of the loss at fixed noise (in eval mode, so
    the annealing schedule stays put), so no term is cut off from the gradient."""
    m, x = model(objective).eval(), batch(16)
    params = list(m.parameters())
    direction = [torch.randn(p.shape, generator=gen(i), dtype=p.dtype) for i, p in enumerate(params)]
    m.loss(x, generator=gen(1)).loss.backward()
    analytic = sum((p.grad * d).sum() for p, d in zip(params, direction)).item()

    def shifted(h: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(h * d)
            value = m.loss(x, generator=gen(1)).loss.item()
            for p, d in zip(params, direction):
                p.sub_(h * d)
        return value

    h = 1e-6
    assert (shifted(h) - shifted(-h)) / (2 * h) == pytest.approx(analytic, rel=1e-5, abs=1e-7)


# --- β-TCVAE ----------------------------------------------------------------------------------


def test_tcvae_terms_sum_to_the_monte_carlo_kl():
    g = gen(0)
    mu, logvar = torch.randn(64, 4, generator=g, dtype=torch.float64), torch.randn(64, 4, generator=g, dtype=torch.float64)
    z = models.reparameterize(mu, logvar, g)
    mi, tc, dim_kl = objectives.kl_decomposition(z, mu, logvar)
    log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(mi + tc + dim_kl, log_q - log_p)


def test_tcvae_estimates_are_exact_when_the_posterior_ignores_x():
    """q(z|x) = q(z) for every x, with independent dims: no information, no correlation."""
    g = gen(1)
    mu = torch.randn(1, 4, generator=g, dtype=torch.float64).expand(128, 4)
    logvar = torch.randn(1, 4, generator=g, dtype=torch.float64).expand(128, 4)
    mi, tc, _ = objectives.kl_decomposition(models.reparameterize(mu, logvar, g), mu, logvar)
    torch.testing.assert_close(mi, torch.zeros(128, dtype=torch.float64))
    torch.testing.assert_close(tc, torch.zeros(128, dtype=torch.float64))


def test_tcvae_total_correlation_sees_correlated_codes():
    """Every dim a copy of one shared variable: strongly dependent dims, large TC."""
    g = gen(2)
    t = torch.randn(128, 1, generator=g, dtype=torch.float64)
    correlated = t.expand(128, 4).contiguous()
    independent = torch.randn(128, 4, generator=g, dtype=torch.float64)
    logvar = torch.full((128, 4), math.log(0.01), dtype=torch.float64)
    tc = {name: objectives.kl_decomposition(models.reparameterize(mu, logvar, g), mu, logvar)[1].mean().item()
          for name, mu in (("correlated", correlated), ("independent", independent))}
    assert tc["correlated"] > 5.0 > tc["independent"]


def test_tcvae_weights_only_shape_the_loss():
    x = batch(64)
    base = model("beta_tcvae", alpha=1.0, beta=1.0, gamma=1.0).loss(x, generator=gen(5))
    heavy = model("beta_tcvae", alpha=1.0, beta=6.0, gamma=1.0).loss(x, generator=gen(5))
    m = model("beta_tcvae")
    mu, logvar = m.encode(x)
    z = models.reparameterize(mu, logvar, gen(5))
    _, tc, _ = objectives.kl_decomposition(z, mu, logvar)
    torch.testing.assert_close(heavy.loss - base.loss, 5.0 * tc.mean())
    assert torch.equal(heavy.elbo, base.elbo)


def test_tcvae_at_unit_weights_is_the_vae_loss_in_expectation():
    """At alpha = beta = gamma = 1 the minibatch estimates of log q(z) and prod q(z_d)
    cancel exactly, leaving recon + log q(z|x) - log p(z): the VAE loss with a one-sample
    Monte-Carlo KL instead of the analytic one. Same mean, so the two agree within the
    Monte-Carlo error (the minibatch estimator's bias only enters when beta != 1)."""
    x = batch(64)
    tc_mean, tc_se = mean_loss(model("beta_tcvae", alpha=1.0, beta=1.0, gamma=1.0), x, 200)
    vae_mean, vae_se = mean_loss(model("vae"), x, 200)
    assert abs(tc_mean - vae_mean) < 4 * math.hypot(tc_se, vae_se)


# --- capacity-annealed β-VAE --------------------------------------------------------------------


def test_capacity_schedule():
    assert [objectives.capacity(s, 25.0, 100).item() for s in (0, 50, 100, 1000)] == [0.0, 12.5, 25.0, 25.0]


def test_annealed_capacity_grows_in_training_and_stays_fixed_in_eval():
    gamma, c_max, c_steps = 10.0, 0.04, 8  # the tiny model's KL (~0.05) stays above C
    m, x = model("annealed_vae", gamma=gamma, c_max=c_max, c_steps=c_steps), batch()
    assert "objective_step" in m.state_dict() and int(m.objective_step) == 0

    def implied_capacity(record) -> float:
        """C from loss = mean recon + gamma |mean KL - C|, knowing the KL is above C."""
        return record.kl.mean().item() - (record.loss.item() - record.recon.mean().item()) / gamma

    m.train()
    seen = [implied_capacity(m.loss(x, generator=gen(0))) for _ in range(4)]
    assert seen == pytest.approx([0.0, 0.005, 0.01, 0.015]) and int(m.objective_step) == 4
    m.eval()
    frozen = [implied_capacity(m.loss(x, generator=gen(0))) for _ in range(3)]
    assert frozen == pytest.approx([0.02] * 3) and int(m.objective_step) == 4
    again = models.build(**m.config).double()  # the counter is state: checkpoints carry it
    again.load_state_dict(m.state_dict())
    assert int(again.objective_step) == 4


def test_annealed_needs_its_counter():
    m = model("vae")
    with pytest.raises(AttributeError, match="objective_step"):
        objectives.annealed_vae(m, batch())


# --- IWAE ---------------------------------------------------------------------------------------


def test_iwae_with_one_sample_is_the_vae_loss():
    x = batch()
    for kl_weight in (1.0, 0.3):
        vae = model("vae").loss(x, kl_weight=kl_weight, generator=gen(9))
        iwae = model("iwae", k=1).loss(x, kl_weight=kl_weight, generator=gen(9))
        torch.testing.assert_close(iwae.loss, vae.loss, rtol=1e-12, atol=1e-12)


def test_iwae_bound_tightens_with_k_on_average():
    x = batch(64)
    elbo, se_elbo = mean_loss(model("vae"), x, 50)
    k5, se5 = mean_loss(model("iwae", k=5), x, 50)
    k50, se50 = mean_loss(model("iwae", k=50), x, 50)
    assert k50 < k5 < elbo  # loss = -bound: a tighter bound is a lower loss
    assert elbo - k5 > 4 * math.hypot(se_elbo, se5)


def test_iwae_rejects_k_below_one():
    with pytest.raises(ValueError, match="k >= 1"):
        model("iwae", k=0).loss(batch())


# --- study files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("objective,hparams", [
    ("beta_tcvae", {"alpha": 0.5, "beta": 6.0, "gamma": 1.0}),
    ("annealed_vae", {"gamma": 100.0, "c_max": 25.0, "c_steps": 1000}),
    ("iwae", {"k": 50}),
])
def test_model_spec_forwards_the_new_hparams(objective, hparams):
    spec = ModelSpec(objective=objective, **hparams)
    assert spec.hparams() == hparams
    built = models.build(arch=spec.arch, objective=objective, latent_dim=2, likelihood="bernoulli",
                         input_shape=(1, 4, 4), **spec.hparams())
    assert {k: built.objective_hparams[k] for k in hparams} == hparams


@pytest.mark.parametrize("fields,problem", [
    ({"objective": "vae", "k": 5}, "model.k: unknown setting"),
    ({"objective": "annealed_vae", "beta": 4.0}, "model.beta: unknown setting"),
    ({"objective": "iwae", "k": 0}, "greater than or equal to 1"),
    ({"objective": "annealed_vae", "c_steps": 0}, "greater than or equal to 1"),
    ({"objective": "beta_tcvae", "alpha": -1.0}, "greater than or equal to 0"),
])
def test_model_spec_rejects_hparams_out_of_bounds_or_not_taken(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        ModelSpec(**fields)
