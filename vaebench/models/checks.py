"""check-model: does a model's record mean what the leaderboard says? Plain checks on tiny data.

Each check takes a Subject (a model factory and a small batch in [0, 1]) and returns a Row:
passed, failed or not applicable, with a one-line reason. CHECKS is the registry. The Monte
Carlo checks compare the record, averaged over many draws of its noise, with an independent
estimate from the declared distributions, paired per example, within 4 standard errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from vaebench.models.base import capabilities, lacks

PASSED, FAILED, NA = "passed", "failed", "not applicable"


@dataclass(frozen=True)
class Row:
    name: str
    status: str
    reason: str


@dataclass
class Subject:
    """build(seed) -> a fresh model; x: a small batch of data in [0, 1]; beta(seed, b) -> the
    same model built with beta = b, where the model (or its objective) takes a beta."""

    build: Callable[[int], nn.Module]
    x: Tensor
    seed: int = 0
    beta: Callable[[int, float], nn.Module] | None = None


def subject(arch: str, x: Tensor, latent_dim: int = 8, **settings: object) -> Subject:
    """The Subject of a registered model: `models.build(arch, **settings)`, seeded, and its beta
    builder where the whole model or the objective takes a `beta` hyperparameter."""
    from vaebench.models import registry  # the registry builds models: imported when asked

    def build(seed: int, **extra: object) -> nn.Module:
        torch.manual_seed(seed)
        return registry.build(arch=arch, latent_dim=latent_dim, input_shape=tuple(x.shape[1:]), **settings, **extra)

    takes = registry.arch_hparams(arch) if registry.is_whole_model(arch) else registry.objective_hparams(str(settings.get("objective") or "vae"))
    return Subject(build, x, beta=(lambda seed, b: build(seed, beta=b)) if "beta" in takes else None)


def _record(model: nn.Module, x: Tensor, seed: int):
    return model.loss(x, generator=torch.Generator().manual_seed(seed))


def _draws(model: nn.Module, x: Tensor, name: str, draws: int) -> Tensor:
    """The record's term `name` over `draws` seeded draws of its noise: (draws, B) float64."""
    return torch.stack([getattr(_record(model, x, i), name).double() for i in range(draws)])


def _agreement(rec: Tensor, mc: Tensor) -> tuple[float, float]:
    """(mean gap, allowed gap) between a record's draws rec (R, B) and an independent Monte
    Carlo estimate mc (S, B), paired per example: 4 standard errors (+0.1% of the estimate)."""
    se = ((rec.var(0) / len(rec) + mc.var(0) / len(mc)).sum().sqrt() / rec.shape[1]).item()
    return (rec.mean(0) - mc.mean(0)).mean().item(), 4 * se + 1e-3 * abs(mc.mean().item())


def _na(model: nn.Module, *needed: str) -> str | None:
    why = lacks(model, *needed)
    return None if why is None else why.replace("skipped: ", "")


def per_example(s: Subject) -> Row:
    """Terms of 16 examples alone equal the same 16 inside a batch of 64 (fixed noise)."""
    model = s.build(s.seed).eval()
    with torch.no_grad():
        small, big = _record(model, s.x[:16], 1), _record(model, s.x[:64], 1)
    for name in ("recon", "kl", "elbo"):
        a, b = getattr(small, name), getattr(big, name)
        if a is None:
            continue
        if a.shape != (16,):
            return Row("per_example", FAILED, f"{name} has shape {tuple(a.shape)}, not one value per example")
        if not torch.allclose(a, b[:16], rtol=1e-4, atol=1e-3):
            return Row("per_example", FAILED, f"{name} changes with the batch size (max diff {(a - b[:16]).abs().max():.3g})")
    return Row("per_example", PASSED, "terms per example, unchanged from batch 16 to 64")


def elbo_terms(s: Subject, draws: int = 16) -> Row:
    """elbo = -recon - kl, and KL >= 0 per example (its mean over draws, within 4 standard
    errors: a Monte Carlo KL may dip below 0 on one draw, an analytic one never)."""
    model = s.build(s.seed).eval()
    if why := _na(model, "elbo"):
        return Row("elbo_terms", NA, why)
    with torch.no_grad():
        r = _record(model, s.x, 0)
        kl = _draws(model, s.x, "kl", draws)
    if not torch.allclose(r.elbo, -(r.recon + r.kl), atol=1e-3):
        return Row("elbo_terms", FAILED, "elbo != -recon - kl")
    low = kl.mean(0) + 4 * kl.std(0) / math.sqrt(draws) + 1e-4
    if (low < 0).any():
        return Row("elbo_terms", FAILED, f"negative KL {kl.mean(0).min():.3g}")
    return Row("elbo_terms", PASSED, "elbo = -recon - kl, KL >= 0")


def loss_weight(s: Subject) -> Row:
    """The record does not move with the loss weight: a weighted loss is never reported as the ELBO."""
    model = s.build(s.seed).eval()
    if why := _na(model, "elbo"):
        return Row("loss_weight", NA, why)
    with torch.no_grad():
        a = model.loss(s.x, kl_weight=1.0, generator=torch.Generator().manual_seed(0))
        b = model.loss(s.x, kl_weight=0.25, generator=torch.Generator().manual_seed(0))
    if not torch.allclose(a.elbo, b.elbo, atol=1e-4):
        return Row("loss_weight", FAILED, "the reported ELBO changes with kl_weight")
    return Row("loss_weight", PASSED, "ELBO unchanged by kl_weight 1 vs 0.25")


def beta_elbo(s: Subject, beta: float = 4.0) -> Row:
    """Built with beta = 4 (a weighted loss), the model reports the same ELBO as at beta = 1, same
    weights and noise: the beta-weighted loss is never reported as the ELBO."""
    model = s.build(s.seed).eval()
    if why := _na(model, "elbo"):
        return Row("beta_elbo", NA, why)
    if s.beta is None:
        return Row("beta_elbo", NA, "the model takes no beta")
    weighted = s.beta(s.seed, beta).eval()
    weighted.load_state_dict(model.state_dict())
    with torch.no_grad():
        a, b = _record(model, s.x, 0), _record(weighted, s.x, 0)
    if not torch.allclose(a.elbo, b.elbo, atol=1e-4):
        return Row("beta_elbo", FAILED, f"the reported ELBO moves with beta: {a.elbo.mean():.2f} at beta = 1, {b.elbo.mean():.2f} at beta = {beta:g}")
    return Row("beta_elbo", PASSED, f"ELBO {a.elbo.mean():.2f} at beta = 1 and {beta:g} (loss {a.loss:.2f} vs {b.loss:.2f})")


def deterministic(s: Subject) -> Row:
    """Same seed, same numbers; state_dict round trip into a fresh build, same outputs."""
    a, b, c = s.build(s.seed).eval(), s.build(s.seed).eval(), s.build(s.seed + 1).eval()
    c.load_state_dict(a.state_dict())
    with torch.no_grad():
        ra, rb, rc = (_record(m, s.x, 3) for m in (a, b, c))
    if not torch.equal(ra.recon, rb.recon):
        return Row("deterministic", FAILED, "the same seed gave different numbers")
    if not torch.equal(ra.recon, rc.recon):
        return Row("deterministic", FAILED, "save -> load changed the outputs")
    return Row("deterministic", PASSED, "same seed same numbers; save -> load same outputs")


def gradients_finite(s: Subject) -> Row:
    """Every parameter gets a gradient; the record is finite on all-zero and all-one inputs."""
    model = s.build(s.seed).train()
    model.loss(s.x, generator=torch.Generator().manual_seed(0)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for fill in (0.0, 1.0):
        with torch.no_grad():
            r = _record(model.eval(), torch.full_like(s.x[:8], fill), 0)
        for name in ("loss", "recon", "kl", "elbo"):
            v = getattr(r, name)
            if v is not None and not torch.isfinite(v).all():
                return Row("gradients_finite", FAILED, f"{name} not finite on all-{int(fill)} input")
    if missing:
        return Row("gradients_finite", FAILED if not lacks(model, "posterior") else PASSED,
                   f"no gradient: {', '.join(missing[:3])}")
    return Row("gradients_finite", PASSED, "every parameter has a gradient; finite on 0 and 1 inputs")


def elbo_monte_carlo(s: Subject, draws: int = 64, samples: int = 256) -> Row:
    """The reported ELBO equals E_q[log p(x|z) + log p(z) - log q(z|x)] within 4 standard errors."""
    model = s.build(s.seed).eval()
    if why := _na(model, "elbo", "posterior", "prior", "likelihood"):
        return Row("elbo_monte_carlo", NA, why)
    torch.manual_seed(s.seed)
    with torch.no_grad():
        rec = _draws(model, s.x, "elbo", draws)  # (R, B)
        q, p = model.posterior(s.x), model.prior()
        z = q.sample((samples,))
        mc = (model.log_likelihood(s.x, z) + p.log_prob(z) - q.log_prob(z)).double()  # (S, B)
    gap, bound = _agreement(rec, mc)
    reason = f"reported {rec.mean():.2f} vs Monte Carlo {mc.mean():.2f} nats (interval +-{bound:.2f}: 4 s.e., {draws}x{samples} draws)"
    return Row("elbo_monte_carlo", PASSED if abs(gap) <= bound else FAILED, reason)


def kl_monte_carlo(s: Subject, draws: int = 64, samples: int = 256) -> Row:
    """The reported KL equals E_q[log q(z|x) - log p(z)] of the declared posterior and prior
    within 4 standard errors (an analytic KL against the wrong prior, or a KL of other
    distributions than the ones the model samples and scores, fails here)."""
    model = s.build(s.seed).eval()
    if why := _na(model, "elbo", "posterior", "prior"):
        return Row("kl_monte_carlo", NA, why)
    torch.manual_seed(s.seed)
    with torch.no_grad():
        rec = _draws(model, s.x, "kl", draws)
        q, p = model.posterior(s.x), model.prior()
        z = q.sample((samples,))
        mc = (q.log_prob(z) - p.log_prob(z)).double()
    gap, bound = _agreement(rec, mc)
    reason = f"reported KL {rec.mean():.3f} vs Monte Carlo {mc.mean():.3f} nats (interval +-{bound:.3f}: 4 s.e., {draws}x{samples} draws)"
    return Row("kl_monte_carlo", PASSED if abs(gap) <= bound else FAILED, reason)


def likelihood(s: Subject, draws: int = 64, samples: int = 256) -> Row:
    """The reported recon equals -log p(x|z) of the declared decoder distribution (torch's own
    Bernoulli on logits, Normal with its normaliser, ...) on the data in [0, 1], within 4
    standard errors, and log_likelihood(x, z) equals its log_prob: probabilities passed as
    logits, or a Gaussian without -D/2 log 2 pi sigma^2, fail here."""
    model = s.build(s.seed).eval()
    if why := _na(model, "posterior", "decoder_distribution"):
        return Row("likelihood", NA, why)
    torch.manual_seed(s.seed)
    with torch.no_grad():
        rec = _draws(model, s.x, "recon", draws)
        z = model.posterior(s.x).sample((samples,))
        declared = model.decoder_distribution(z)
        mc = -declared.log_prob(s.x).double()  # (S, B)
        own = -model.log_likelihood(s.x, z).double() if "likelihood" in capabilities(model) else mc
    name = type(getattr(declared, "base_dist", declared)).__name__
    if not torch.allclose(own, mc, rtol=1e-4, atol=1e-2):
        return Row("likelihood", FAILED, f"log_likelihood(x, z) is not the declared {name}'s log_prob (off by up to {(own - mc).abs().max():.4g} nats)")
    gap, bound = _agreement(rec, mc)
    reason = f"reported recon {rec.mean():.2f} vs -log p(x|z) of the declared {name} {mc.mean():.2f} nats (interval +-{bound:.2f}: 4 s.e.)"
    return Row("likelihood", PASSED if abs(gap) <= bound else FAILED, reason)


def iwae_bound(s: Subject, ks: tuple[int, ...] = (1, 10, 100, 1000), draws: int = 64) -> Row:
    """IWAE_k >= the reported ELBO and does not fall as k grows (k = 1 ... 1000), each beyond
    4 standard errors of the paired per-example differences."""
    from vaebench.metrics import iwae_log_likelihood  # metrics builds on models: imported when run

    model = s.build(s.seed).eval()
    if why := _na(model, "elbo", "posterior", "prior", "likelihood"):
        return Row("iwae_bound", NA, why)
    with torch.no_grad():
        elbo = _draws(model, s.x, "elbo", draws).mean(0)
    bounds = [iwae_log_likelihood(model, s.x, k, seed=s.seed) for k in ks]

    def below(a: Tensor, b: Tensor) -> bool:  # a falls short of b beyond 4 standard errors
        d = a - b
        return d.mean().item() < -4 * (d.std() / math.sqrt(len(d))).item()

    if below(bounds[-1], elbo):
        return Row("iwae_bound", FAILED, f"IWAE_{ks[-1]} {bounds[-1].mean():.2f} < ELBO {elbo.mean():.2f} nats")
    for (k, a), (k2, b) in zip(zip(ks, bounds), zip(ks[1:], bounds[1:])):
        if below(b, a):
            return Row("iwae_bound", FAILED, f"IWAE_{k2} {b.mean():.2f} < IWAE_{k} {a.mean():.2f} nats")
    path = " <= ".join(f"{b.mean():.2f}" for b in bounds)
    return Row("iwae_bound", PASSED, f"ELBO {elbo.mean():.2f} <= IWAE_k for k = {', '.join(map(str, ks))}: {path}")


CHECKS: dict[str, Callable[[Subject], Row]] = {
    "per_example": per_example,
    "elbo_terms": elbo_terms,
    "elbo_monte_carlo": elbo_monte_carlo,
    "kl_monte_carlo": kl_monte_carlo,
    "likelihood": likelihood,
    "iwae_bound": iwae_bound,
    "loss_weight": loss_weight,
    "beta_elbo": beta_elbo,
    "deterministic": deterministic,
    "gradients_finite": gradients_finite,
}


def run_checks(s: Subject) -> list[Row]:
    """Every check; one that raises is a failure with the exception as its reason."""
    rows = []
    for name, check in CHECKS.items():
        try:
            rows.append(check(s))
        except Exception as exc:  # noqa: BLE001 - the model's code may raise anything
            rows.append(Row(name, FAILED, f"raised {type(exc).__name__}: {exc}"[:160]))
    return rows
