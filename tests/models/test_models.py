"""vaebench.models: likelihoods, KL, objectives, architectures, registry, model."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import distributions as D
from torch import nn

from vaebench import models
from vaebench.models.likelihoods import Bernoulli, Gaussian


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(objective: str = "vae", likelihood: str = "bernoulli", **hparams) -> models.VAEModel:
    torch.manual_seed(0)
    return models.build(
        arch="mlp", objective=objective, latent_dim=3, likelihood=likelihood,
        input_shape=(1, 4, 4), hidden=(16,), **hparams,
    )


# Likelihoods ---------------------------------------------------------------------------

def test_bernoulli_nll_matches_hand_computation():
    logits = torch.tensor([[0.0, 2.0, -1.0], [0.5, -3.0, 1.5]]).reshape(2, 1, 1, 3)
    x = torch.tensor([[1.0, 0.0, 0.25], [0.0, 1.0, 0.75]]).reshape(2, 1, 1, 3)
    lg, xs = logits.numpy().reshape(2, 3).astype(np.float64), x.numpy().reshape(2, 3).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-lg))
    expected = -(xs * np.log(p) + (1 - xs) * np.log(1 - p)).sum(axis=1)
    got = Bernoulli().nll(logits, x)
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    # First pixel written out: logit 0 -> p = 1/2, x = 1 -> ln 2.
    assert Bernoulli().nll(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).item() == pytest.approx(math.log(2))


def test_bernoulli_nll_is_exact_log_pmf_for_binary_x():
    g = gen(1)
    logits = torch.randn(4, 2, 5, 5, generator=g) * 3
    x = (torch.rand(4, 2, 5, 5, generator=g) > 0.5).float()
    expected = -D.Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(Bernoulli().nll(logits, x), expected)
    torch.testing.assert_close(Bernoulli().mean(logits), torch.sigmoid(logits))


def test_gaussian_nll_is_normal_log_density():
    lik = Gaussian()
    assert torch.exp(lik.log_sigma).item() == pytest.approx(0.1)  # documented init
    with torch.no_grad():
        lik.log_sigma.fill_(math.log(0.3))
    g = gen(2)
    mean, x = torch.randn(3, 1, 6, 6, generator=g), torch.rand(3, 1, 6, 6, generator=g)
    expected = -D.Normal(mean, 0.3).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(lik.nll(mean, x), expected)
    torch.testing.assert_close(lik.mean(mean), mean.clamp(0, 1))


def test_gaussian_log_sigma_is_clamped_and_learned():
    lik = Gaussian()
    with torch.no_grad():
        lik.log_sigma.fill_(-10.0)
    mean, x = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.01)
    expected = -D.Normal(mean, math.exp(-6.0)).log_prob(x).sum()
    torch.testing.assert_close(lik.nll(mean, x), expected.reshape(1))
    assert [name for name, _ in lik.named_parameters()] == ["log_sigma"]


# KL --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analytic_kl_matches_monte_carlo(seed):
    g = gen(seed)
    mu = torch.randn(1, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(1, 3, generator=g, dtype=torch.float64)
    q = D.Normal(mu[0], torch.exp(0.5 * logvar[0]))
    p = D.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    torch.manual_seed(seed)
    z = q.sample((200_000,))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(dim=1)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(len(log_ratio))
    analytic = models.gaussian_kl(mu, logvar).item()
    assert abs(mc - analytic) < 4 * se
    torch.testing.assert_close(models.gaussian_kl(mu, logvar), D.kl_divergence(q, p).sum().reshape(1))
    torch.testing.assert_close(models.gaussian_kl_per_dim(mu, logvar).sum(1), models.gaussian_kl(mu, logvar))


def test_kl_is_zero_at_the_prior():
    zeros = torch.zeros(2, 5)
    assert torch.equal(models.gaussian_kl(zeros, zeros), torch.zeros(2))


# Objectives ------------------------------------------------------------------------------

def test_beta_only_enters_the_loss():
    x = (torch.rand(6, 1, 4, 4, generator=gen(3)) > 0.5).double()
    m_vae = tiny_model("vae").double()
    m_beta = tiny_model("beta_vae", beta=4.0).double()
    m_beta.load_state_dict(m_vae.state_dict())
    r1, r4 = m_vae.loss(x, generator=gen(7)), m_beta.loss(x, generator=gen(7))
    for name in ("recon", "kl", "elbo"):
        assert torch.equal(getattr(r1, name), getattr(r4, name)), name
    assert torch.equal(r4.elbo, -(r4.recon + r4.kl))
    torch.testing.assert_close(r4.loss - r1.loss, 3.0 * r1.kl.mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r1.loss, (r1.recon + r1.kl).mean())


def test_kl_weight_scales_only_the_kl_term():
    x = torch.rand(5, 1, 4, 4, generator=gen(4)).double()
    m = tiny_model("beta_vae", beta=2.0).double()
    full, warm = m.loss(x, kl_weight=1.0, generator=gen(1)), m.loss(x, kl_weight=0.25, generator=gen(1))
    assert torch.equal(full.recon, warm.recon) and torch.equal(full.elbo, warm.elbo)
    torch.testing.assert_close(warm.loss, (warm.recon + 0.5 * warm.kl).mean(), rtol=1e-12, atol=1e-12)
    cold = m.loss(x, kl_weight=0.0, generator=gen(1))
    torch.testing.assert_close(cold.loss, cold.recon.mean(), rtol=1e-12, atol=1e-12)


def test_ae_is_deterministic_and_has_no_kl():
    m = tiny_model("ae")
    x = torch.rand(3, 1, 4, 4)
    a, b = m.loss(x, generator=gen(0)), m.loss(x, generator=gen(1))
    assert a.kl is None and a.elbo is None and not m.is_variational
    assert torch.equal(a.recon, b.recon)
    mu, _ = m.encode(x)
    torch.testing.assert_close(a.recon, m.nll(m.decode(mu), x))


def test_same_seed_same_record():
    m, x = tiny_model("beta_vae", beta=2.0), torch.rand(4, 1, 4, 4)
    a, b, c = (m.loss(x, generator=gen(s)) for s in (11, 11, 12))
    for name in ("loss", "recon", "kl", "elbo"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.recon, c.recon)


# Architectures x objectives x likelihoods ------------------------------------------------

SHAPES = {"mlp": [(1, 8, 8), (1, 28, 28)], "tutorial_mlp": [(1, 8, 8), (1, 28, 28)],
          "conv": [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 64, 64)]}
GRID = [(arch, shape, obj, lik) for arch, shapes in SHAPES.items() for shape in shapes
        for obj, lik in itertools.product(sorted(models.OBJECTIVES), sorted(models.LIKELIHOODS))]


@pytest.mark.parametrize("arch,shape,objective,likelihood", GRID)
def test_every_combination_has_shapes_and_gradients(arch, shape, objective, likelihood):
    torch.manual_seed(0)
    latent = 5
    hparams = {"channels": (8, 16), "hidden": 32} if arch == "conv" else {}
    m = models.build(arch=arch, objective=objective, latent_dim=latent, likelihood=likelihood,
                     input_shape=shape, **hparams)
    x = torch.rand(3, *shape)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, latent)
    assert m.decode(mu).shape == x.shape
    rec = m.loss(x, generator=gen(0))
    assert rec.recon.shape == (3,) and rec.loss.dim() == 0 and torch.isfinite(rec.loss)
    if objective == "ae":
        assert rec.kl is None and rec.elbo is None
    else:
        assert rec.kl.shape == rec.elbo.shape == (3,) and (rec.kl >= 0).all()
    rec.loss.backward()
    unused = {"encoder.logvar.weight", "encoder.logvar.bias"} if objective == "ae" else set()
    for name, p in m.named_parameters():
        if name in unused:
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        for images in (m.reconstruct(x), m.sample(2, generator=gen(0))):
            assert images.min() >= 0 and images.max() <= 1
        assert m.sample(2).shape == (2, *shape)
        torch.testing.assert_close(m(x), m.reconstruct(x))


@pytest.mark.parametrize("shape", [(1, 7, 7), (3, 31, 17), (2, 5, 9)])
def test_conv_restores_odd_sizes(shape):
    m = models.build(arch="conv", objective="vae", latent_dim=2, likelihood="bernoulli",
                     input_shape=shape, channels=(4, 4), hidden=8)
    assert m.decode(torch.zeros(1, 2)).shape == (1, *shape)


def test_conv_rejects_input_too_small_for_its_depth():
    with pytest.raises(ValueError, match="too small"):
        models.build(arch="conv", objective="vae", latent_dim=2, likelihood="bernoulli",
                     input_shape=(1, 8, 8), channels=(4, 4, 4, 4))


def test_channels_last_gives_the_same_numbers():
    torch.manual_seed(0)
    m = models.build(arch="conv", objective="vae", latent_dim=4, likelihood="gaussian",
                     input_shape=(3, 32, 32), channels=(8, 16), hidden=32)
    x = torch.rand(2, 3, 32, 32)
    ref = m.loss(x, generator=gen(0))
    m_cl = m.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got = m_cl.loss(x_cl, generator=gen(0))
    torch.testing.assert_close(got.recon, ref.recon, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got.kl, ref.kl, rtol=1e-4, atol=1e-4)
    got.loss.backward()


def test_tutorial_mlp_structure_and_separate_heads():
    torch.manual_seed(0)
    m = models.build(arch="tutorial_mlp", objective="vae", latent_dim=8, likelihood="bernoulli",
                     input_shape=(1, 28, 28))
    enc = [(l.in_features, l.out_features) for l in m.encoder.body if isinstance(l, nn.Linear)]
    dec = [(l.in_features, l.out_features) for l in m.decoder if isinstance(l, nn.Linear)]
    assert enc == [(784, 128), (128, 64), (64, 32), (32, 16)]
    assert dec == [(8, 16), (16, 32), (32, 64), (64, 128), (128, 784)]
    heads = m.encoder.mu, m.encoder.logvar
    assert heads[0] is not heads[1]
    assert all(isinstance(h, nn.Linear) and (h.in_features, h.out_features) == (16, 8) for h in heads)
    mu, logvar = m.encode(torch.rand(4, 1, 28, 28))
    assert not torch.allclose(mu, logvar)
    linear = lambda a, b: a * b + b  # noqa: E731
    expected = sum(linear(a, b) for a, b in enc + dec) + 2 * linear(16, 8)
    assert m.n_params == expected
    assert models.arch_hparams("tutorial_mlp") == {}


# Registry --------------------------------------------------------------------------------

BASE = dict(arch="mlp", objective="vae", latent_dim=2, likelihood="bernoulli", input_shape=(1, 8, 8))


@pytest.mark.parametrize("field,known", [
    ("arch", "conv, mlp, tutorial_mlp"),
    ("objective", "ae, annealed_vae, beta_tcvae, beta_vae, iwae, vae"),
    ("likelihood", "bernoulli, discretized_logistic, gaussian"),
])
def test_build_rejects_unknown_names_listing_known_ones(field, known):
    with pytest.raises(ValueError, match=f"unknown {field} 'nope'; known: {known}"):
        models.build(**{**BASE, field: "nope"})


def test_build_rejects_unknown_hparams():
    with pytest.raises(ValueError, match=r"'beta'.*'vae'.*valid: activation, hidden"):
        models.build(**BASE, beta=4.0)
    with pytest.raises(ValueError, match=r"'channels'.*valid: activation, beta, hidden"):
        models.build(**{**BASE, "objective": "beta_vae"}, channels=(8,))
    with pytest.raises(TypeError):
        models.OBJECTIVES["vae"](tiny_model(), torch.rand(1, 1, 4, 4), beta=4.0)


@pytest.mark.parametrize("latent_dim", [0, -1, 2.5, True])
def test_build_rejects_bad_latent_dim(latent_dim):
    with pytest.raises(ValueError, match="latent_dim"):
        models.build(**{**BASE, "latent_dim": latent_dim})


def test_introspection_and_config_roundtrip():
    assert models.describe() == {"architectures": ["conv", "mlp", "tutorial_mlp"], "models": [],
                                 "activations": ["elu", "relu", "softplus", "tanh"],
                                 "objectives": ["ae", "annealed_vae", "beta_tcvae", "beta_vae", "iwae", "vae"],
                                 "likelihoods": ["bernoulli", "discretized_logistic", "gaussian"]}
    assert models.objective_hparams("beta_vae") == {"beta": 1.0}
    assert models.objective_hparams("vae") == {} == models.objective_hparams("ae")
    assert models.arch_hparams("conv") == {"channels": (32, 64), "hidden": 256, "activation": "relu"}
    m = models.build(arch="conv", objective="beta_vae", latent_dim=3, likelihood="gaussian",
                     input_shape=(1, 8, 8), hidden=16)
    assert m.config == {"arch": "conv", "objective": "beta_vae", "latent_dim": 3, "likelihood": "gaussian",
                        "input_shape": (1, 8, 8), "channels": (32, 64), "hidden": 16, "activation": "relu", "beta": 1.0}
    again = models.build(**m.config)
    assert again.n_params == m.n_params and again.config == m.config


# Training sanity ---------------------------------------------------------------------------

def test_a_few_adam_steps_lower_the_reconstruction():
    g = gen(5)
    rows = torch.rand(32, 8, 1, generator=g) < 0.3          # random horizontal bars
    cols = torch.rand(32, 1, 8, generator=g) < 0.3          # and vertical bars
    x = (rows | cols).float().unsqueeze(1)                  # (32, 1, 8, 8), binary
    torch.manual_seed(0)
    m = models.build(arch="mlp", objective="vae", latent_dim=8, likelihood="bernoulli",
                     input_shape=(1, 8, 8), hidden=(128,))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    step_gen = gen(0)
    with torch.no_grad():
        before = m.loss(x, generator=gen(1)).recon.mean().item()
    for _ in range(200):
        opt.zero_grad()
        m.loss(x, generator=step_gen).loss.backward()
        opt.step()
    with torch.no_grad():
        after = m.loss(x, generator=gen(1))
    assert after.recon.mean().item() < 0.3 * before  # ~45 -> ~5 nats in practice
    assert torch.isfinite(after.elbo).all()


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_hidden_activation_is_a_setting_of_mlp_and_conv(arch: str) -> None:
    model = models.build(arch=arch, objective="vae", latent_dim=3, likelihood="bernoulli",
                         input_shape=(1, 28, 28), activation="tanh")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Tanh" in kinds and "ReLU" not in kinds
    assert model.config["activation"] == "tanh"  # rebuilds the same network
    default = {type(m).__name__ for m in models.build(arch=arch, objective="vae", latent_dim=3,
                                                      likelihood="bernoulli", input_shape=(1, 28, 28)).modules()}
    assert "ReLU" in default and "Tanh" not in default
    with pytest.raises(ValueError, match="unknown activation 'gelu'; known: elu, relu, softplus, tanh"):
        models.build(arch=arch, objective="vae", latent_dim=3, likelihood="bernoulli",
                     input_shape=(1, 28, 28), activation="gelu")
