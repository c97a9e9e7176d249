"""check-model's checks: every built-in objective passes; a planted bug fails its named check."""
from __future__ import annotations

import pytest
import torch

from vaebench import models
from vaebench.models import checks

X = (torch.rand(64, 1, 8, 8) > 0.5).float()


def subject(objective: str) -> checks.Subject:
    def build(seed: int):
        torch.manual_seed(seed)
        return models.build(arch="mlp", objective=objective, latent_dim=4, input_shape=(1, 8, 8), hidden=(32,))
    return checks.Subject(build, X)


@pytest.mark.parametrize("objective", sorted(models.OBJECTIVES))
def test_every_builtin_objective_passes(objective: str) -> None:
    rows = checks.run_checks(subject(objective))
    assert [r.name for r in rows] == list(checks.CHECKS)
    assert all(r.status != checks.FAILED for r in rows), rows


def test_batch_summed_kl_fails_per_example() -> None:
    s = subject("vae")
    inner = s.build

    def build(seed: int):
        model = inner(seed)
        loss = model.loss

        def summed(x, kl_weight=1.0, generator=None):
            r = loss(x, kl_weight=kl_weight, generator=generator)
            kl = r.kl.sum().expand(len(x))
            return models.LossRecord(loss=r.loss, recon=r.recon, kl=kl, elbo=-(r.recon + kl))
        model.loss = summed
        return model

    rows = {r.name: r for r in checks.run_checks(checks.Subject(build, X))}
    assert rows["per_example"].status == checks.FAILED


def test_an_iwae_below_the_reported_elbo_fails_iwae_bound() -> None:
    """A record that reports an ELBO 5 nats above the true one is refused: the
    importance-weighted bound of the declared distributions stays below it at every k."""
    s = subject("vae")
    inner = s.build

    def build(seed: int):
        model = inner(seed)
        loss = model.loss

        def flattering(x, kl_weight=1.0, generator=None):
            r = loss(x, kl_weight=kl_weight, generator=generator)
            return models.LossRecord(loss=r.loss, recon=r.recon, kl=r.kl, elbo=r.elbo + 5.0)
        model.loss = flattering
        return model

    row = checks.iwae_bound(checks.Subject(build, X))
    assert row.status == checks.FAILED and "< ELBO" in row.reason
    assert checks.iwae_bound(subject("vae")).status == checks.PASSED
